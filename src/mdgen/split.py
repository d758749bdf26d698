"""Per-user train/val split of an image folder in the real-data layout.

Real gait recordings are cut into overlapping windows (`ID1_case1_1_Doppler12.jpg`,
`...Doppler13.jpg`): neighbours are nearly the same image, so a random split puts
near-copies on both sides and validation measures memory, not generalisation. The
`blocks` mode moves contiguous runs of windows to val and drops `gap` windows on each
side of a val run from train, so no val file has a train neighbour.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from mdgen.errors import BadFileError, DataError, MissingFileError
from mdgen.images import crop_plan
from mdgen.io import list_images, list_users, natural_key, read_json
from mdgen.params import SplitConfig

if TYPE_CHECKING:
    import torch

_TRAILING_INDEX = re.compile(r"^(.*?)(\d+)$")


def recording_and_index(name: str) -> tuple[str, int | None]:
    """`ID1_case1_1_Doppler12.jpg` -> ('ID1_case1_1_Doppler', 12); a stem without a trailing number -> (stem, None)."""
    stem = Path(name).stem
    m = _TRAILING_INDEX.match(stem)
    return (m.group(1), int(m.group(2))) if m else (stem, None)


# one line per problem, at most this many in one error (the rest are counted)
MAX_LISTED = 20
_SYMLINK_NOTE = ("DVC does not hash what is behind a symlink, so edits there go unnoticed (`dvc status` says up "
                 "to date, later stages read stale latents or miss files); copy the images into the data folder "
                 "and `dvc add` that real copy")


def decode(path: Path) -> tuple[int, int] | str:
    """(width, height) of the image at `path`, decoded completely as the stages read it, or why it cannot be read.

    PIL's `verify()` does not decode pixel data (a truncated JPEG passes it): this is the `load()` and RGB
    conversion of `images.load_image`, whose errors a later stage would otherwise meet.
    """
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as im:
            im.load()
            im.convert("RGB")
            return im.size
    except UnidentifiedImageError:
        return "not an image PIL can identify (expected png/jpg/jpeg/bmp)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"cannot be decoded: {e}"


def _too_few(folder: Path, n: int) -> str | None:
    if n >= 2:
        return None
    return (f"user folder {folder} has {n} image(s): expected at least 2 (png/jpg/jpeg/bmp) "
            "so that train and val are both non-empty")


def _link_target(path: Path) -> Path | None:
    """Where `path` leads if it is a symlink, else None."""
    return path.resolve() if path.is_symlink() else None


def check_data(data_dir: str | Path) -> dict[tuple[int, int], list[Path]]:
    """Every image of every person folder decoded once; the files by (width, height), in data order.

    The whole folder is checked before anything is raised: unreadable (truncated, empty, not an image)
    files, person folders with fewer than 2 images, and symlinks (person folders or images), whose targets
    DVC does not track: even one pointing inside `data_dir` adds a person or an image that DVC never hashes. All problems come in one DataError, by person folder, one line
    each naming the file and the reason; a single problem is one line.
    """
    data_dir = Path(data_dir)
    list_users(data_dir)  # its errors first: no such folder, no person folders in it
    problems: list[tuple[str, str]] = []  # (person folder, what is wrong)
    symlinks = False
    sizes: dict[tuple[int, int], list[Path]] = {}
    # the person folders of list_users (symlinks to folders included), in its order
    for folder in sorted(data_dir.iterdir(), key=lambda p: natural_key(p.name)):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if target := _link_target(folder):
            problems.append((folder.name, f"person folder {folder} is a symlink to {target}"))
            symlinks = True
            continue
        images = list_images(folder)
        if msg := _too_few(folder, len(images)):
            problems.append((folder.name, msg))
        for p in images:
            if target := _link_target(p):
                problems.append((folder.name, f"image {p} is a symlink to {target}"))
                symlinks = True
            elif isinstance(size := decode(p), str):
                problems.append((folder.name, f"unreadable image {p}: {size}"))
            else:
                sizes.setdefault(size, []).append(p)
    if len(problems) == 1:
        raise DataError(problems[0][1] + (f": {_SYMLINK_NOTE}" if symlinks else ""))
    if problems:
        lines = [msg for _, msg in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"... and {len(problems) - MAX_LISTED} more")
        if symlinks:
            lines.append(f"symlinks: {_SYMLINK_NOTE}")
        n_folders = len({folder for folder, _ in problems})
        raise DataError(f"{len(problems)} problems in {n_folders} person folder(s) of {data_dir} "
                        "(nothing was written):\n  " + "\n  ".join(lines))
    return sizes


def resize_effect(width: int, height: int, image_size: int) -> str:
    """What `images.center_crop_arr` does to a width x height image, in words: the resize and what the crop drops.

    Columns are the time axis of a spectrogram, rows the Doppler axis.
    """
    w, h = crop_plan(width, height, image_size)[1]
    factor = w / width
    out = f"resized to {w}x{h} (x{factor:.3g}, {'downscaled' if factor < 1 else 'upscaled'})"
    if w > image_size:
        return out + f", then {w - image_size} of {w} columns cropped: {(w - image_size) / w:.0%} of the time axis lost"
    if h > image_size:
        return out + f", then {h - image_size} of {h} rows cropped: {(h - image_size) / h:.0%} of the Doppler axis lost"
    return out + ", nothing cropped"


def size_report(sizes: dict[tuple[int, int], list[Path]], image_size: int, data_dir: str | Path) -> list[str]:
    """Lines on the images that are not image_size square: per size, the count, two examples and `resize_effect`.

    Empty when every image is image_size square.
    """
    off = {s: files for s, files in sizes.items() if s != (image_size, image_size)}
    if not off:
        return []
    n_off, n_all = sum(map(len, off.values())), sum(map(len, sizes.values()))
    lines = [f"{n_off} of {n_all} images are not {image_size}x{image_size}; extract and the stages after it "
             f"resize each so that its short side is {image_size} and keep the centre square:"]
    for (w, h), files in sorted(off.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        examples = ", ".join([p.relative_to(data_dir).as_posix() for p in files[:2]] + ["..."] * (len(files) > 2))
        lines.append(f"  {w}x{h}: {len(files)} image(s) ({examples}): {resize_effect(w, h, image_size)}")
    return lines


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


def split_user(files: list[str], config: SplitConfig, rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    """(train, val, dropped) file names for one user; at least one of each of train and val."""
    n_val = min(max(1, round(config.val_fraction * len(files))), len(files) - 1)
    if config.mode == "random":
        shuffled = files[:]
        rng.shuffle(shuffled)
        val = set(shuffled[:n_val])
        dropped: set[str] = set()
    elif config.mode == "blocks":
        blocks = _blocks(files, config.block_size)
        rng.shuffle(blocks)
        val = set()
        for b in blocks:
            if len(val) >= n_val:
                break
            val.update(b[: n_val - len(val)])
        dropped = _neighbours(files, val, config.gap)
        if len(dropped) >= len(files) - len(val):
            # a tiny user folder: keep train non-empty rather than fail, at the price of a neighbour
            dropped = set()
    else:
        raise ValueError(f"split mode {config.mode!r}: expected 'blocks' or 'random'")
    train = [f for f in files if f not in val and f not in dropped]
    return train, [f for f in files if f in val], [f for f in files if f in dropped]


def make_split(data_dir: str | Path, config: SplitConfig, seed: int, verify_images: bool = True) -> dict:
    """The split manifest as the `split` section says: users in label order and per-user train/val file names.

    Paths are relative to `data_dir` (`ID_3/17.png`) so the manifest stays valid when the
    folder moves between machines. `verify_images` runs `check_data` first; the `split` stage
    runs it itself (it reports the image sizes) and passes False, so each image is decoded once.
    """
    data_dir = Path(data_dir)
    if verify_images:
        check_data(data_dir)
    users = list_users(data_dir)
    rng = random.Random(seed)
    train, val, dropped = {}, {}, {}
    for user in users:
        images = list_images(data_dir / user)
        if msg := _too_few(data_dir / user, len(images)):
            raise DataError(msg)
        names = [p.name for p in images]
        tr, va, dr = split_user(names, config, rng)
        train[user] = [f"{user}/{n}" for n in tr]
        val[user] = [f"{user}/{n}" for n in va]
        dropped[user] = [f"{user}/{n}" for n in dr]
    return {
        "data_dir": str(data_dir),
        "users": users,
        "mode": config.mode,
        "val_fraction": config.val_fraction,
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
        raise MissingFileError(f"split manifest {path} not found (run the `split` stage)")
    m = read_json(path)
    for key in ("data_dir", "users", "train", "val"):
        if key not in m:
            raise BadFileError(f"{path}: missing '{key}' (expected a manifest written by `mdgen split`)")
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


def dataset_files(manifest: dict) -> list[Path]:
    """Every image a manifest lists (train, val and dropped): users in label order, files in natural order.

    The same list as `io.list_dataset_images` of the folder when `split` checked it, for stages that read
    every image (`texture`) and must not meet one that `split` did not check.
    """
    if "dropped" not in manifest:
        raise BadFileError("split manifest has no 'dropped' list (expected a manifest written by `mdgen split`: "
                           "run it again)")
    root = Path(manifest["data_dir"])
    files = []
    for user in manifest["users"]:
        rels = [rel for part in ("train", "val", "dropped") for rel in manifest[part].get(user, [])]
        files += [root / rel for rel in sorted(rels, key=lambda rel: natural_key(Path(rel).name))]
    return files
