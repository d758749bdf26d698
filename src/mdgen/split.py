"""Per-user train/val split of an image folder in the real-data layout.

Real gait recordings are cut into overlapping windows (`ID1_case1_1_Doppler12.jpg`,
`...Doppler13.jpg`): neighbours are nearly the same image, so a random split puts
near-copies on both sides and validation measures memory, not generalisation. The
`blocks` mode moves contiguous runs of windows to val and drops `gap` windows on each
side of a val run from train, so no val file has a train neighbour.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from mdgen.io import list_images, list_users

if TYPE_CHECKING:
    import torch

_TRAILING_INDEX = re.compile(r"^(.*?)(\d+)$")


def recording_and_index(name: str) -> tuple[str, int | None]:
    """`ID1_case1_1_Doppler12.jpg` -> ('ID1_case1_1_Doppler', 12); a stem without a trailing number -> (stem, None)."""
    stem = Path(name).stem
    m = _TRAILING_INDEX.match(stem)
    return (m.group(1), int(m.group(2))) if m else (stem, None)


def check_image(path: Path) -> None:
    """Fail early, naming the file, on anything PIL cannot parse as an image."""
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"unreadable image {path}: {e} (expected a png/jpg/jpeg/bmp image)") from None


def _blocks(files: list[str], block_size: int) -> list[list[str]]:
    """Contiguous runs of at most `block_size` files of one recording, in index order."""
    by_rec: dict[str, list[tuple[int, str]]] = {}
    for f in files:
        rec, idx = recording_and_index(f)
        by_rec.setdefault(rec, []).append((idx if idx is not None else -1, f))
    blocks = []
    for rec in sorted(by_rec):
        run = sorted(by_rec[rec])
        for i in range(0, len(run), block_size):
            blocks.append([f for _, f in run[i:i + block_size]])
    return blocks


def _neighbours(files: list[str], val: set[str], gap: int) -> set[str]:
    """Files not in `val` within `gap` indices of a val file of the same recording."""
    val_keys = {recording_and_index(f) for f in val}
    out = set()
    for f in files:
        rec, idx = recording_and_index(f)
        if f in val or idx is None:
            continue
        if any((rec, idx + d) in val_keys for d in range(-gap, gap + 1) if d):
            out.add(f)
    return out


def split_user(files: list[str], val_fraction: float, rng: random.Random, mode: str,
               block_size: int = 6, gap: int = 1) -> tuple[list[str], list[str], list[str]]:
    """(train, val, dropped) file names for one user; at least one of each of train and val."""
    n_val = min(max(1, round(val_fraction * len(files))), len(files) - 1)
    if mode == "random":
        shuffled = files[:]
        rng.shuffle(shuffled)
        val = set(shuffled[:n_val])
        dropped: set[str] = set()
    elif mode == "blocks":
        blocks = _blocks(files, block_size)
        rng.shuffle(blocks)
        val = set()
        for b in blocks:
            if len(val) >= n_val:
                break
            val.update(b[: n_val - len(val)])
        dropped = _neighbours(files, val, gap)
        if len(dropped) >= len(files) - len(val):
            # a tiny user folder: keep train non-empty rather than fail, at the price of a neighbour
            dropped = set()
    else:
        raise ValueError(f"split mode {mode!r}: expected 'blocks' or 'random'")
    train = [f for f in files if f not in val and f not in dropped]
    return train, [f for f in files if f in val], [f for f in files if f in dropped]


def make_split(data_dir: str | Path, val_fraction: float, seed: int, mode: str = "blocks",
               block_size: int = 6, gap: int = 1, verify_images: bool = True) -> dict:
    """The split manifest: users in label order and per-user train/val file names.

    Paths are relative to `data_dir` (`ID_3/17.png`) so the manifest stays valid when the
    folder moves between machines.
    """
    data_dir = Path(data_dir)
    users = list_users(data_dir)
    rng = random.Random(seed)
    train, val, dropped = {}, {}, {}
    for user in users:
        images = list_images(data_dir / user)
        if len(images) < 2:
            raise ValueError(f"user folder {data_dir / user} has {len(images)} image(s): "
                             "expected at least 2 (png/jpg/jpeg/bmp) so that train and val are both non-empty")
        if verify_images:
            for p in images:
                check_image(p)
        names = [p.name for p in images]
        tr, va, dr = split_user(names, val_fraction, rng, mode, block_size, gap)
        train[user] = [f"{user}/{n}" for n in tr]
        val[user] = [f"{user}/{n}" for n in va]
        dropped[user] = [f"{user}/{n}" for n in dr]
    return {
        "data_dir": str(data_dir),
        "users": users,
        "mode": mode,
        "val_fraction": val_fraction,
        "seed": seed,
        "counts": {"train": sum(map(len, train.values())), "val": sum(map(len, val.values())),
                   "dropped": sum(map(len, dropped.values()))},
        "train": train,
        "val": val,
        "dropped": dropped,
    }


def read_split(path: str | Path) -> dict:
    """The manifest `make_split` wrote (via the `split` stage); a missing file or key is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split manifest {path} not found (run the `split` stage)")
    m = json.loads(path.read_text())
    for key in ("data_dir", "users", "train", "val"):
        if key not in m:
            raise ValueError(f"{path}: missing '{key}' (expected a manifest written by `mdgen split`)")
    return m


def files_and_labels(manifest: dict, part: str) -> tuple[list[Path], torch.Tensor]:
    """Image paths of one part ('train' or 'val') of a manifest, and their int64 labels (user order)."""
    import torch  # here, not at the top: the `split` stage itself does not need torch

    root = Path(manifest["data_dir"])
    files, labels = [], []
    for label, user in enumerate(manifest["users"]):
        for rel in manifest[part].get(user, []):
            files.append(root / rel)
            labels.append(label)
    return files, torch.tensor(labels, dtype=torch.int64)
