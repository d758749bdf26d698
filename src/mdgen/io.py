"""Files: image folders in the real-data layout, atomic writes, JSON."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ID_2 before ID_10."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder` (png/jpg/jpeg/bmp, any case), natural order."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_users(data_dir: str | Path) -> list[str]:
    """User sub-folders of `data_dir` in natural order (the label of a user is its index here)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist (expected one sub-folder per user)")
    users = sorted((p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    if not users:
        raise ValueError(f"data folder {data_dir} has no user sub-folders (expected e.g. {data_dir}/ID_1/*.png)")
    return users


def list_dataset_images(data_dir: str | Path) -> list[Path]:
    """Every image of every user sub-folder of `data_dir` (the data layout), users and files in natural order."""
    return [f for user in list_users(data_dir) for f in list_images(Path(data_dir) / user)]


def check_folder_name(name: str, source: str) -> str:
    """`name` if it is a plain folder name (one path component, not hidden, no separators), else a ValueError.

    Person names become folders of samples; a name read from a shared model file such as `../../x`
    must not write outside the output folder.
    """
    if (not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name
            or "\0" in name or Path(name).name != name):
        raise ValueError(f"{source}: person name {name!r} is not a plain folder name "
                         "(expected e.g. ID_3: no path separators, not empty, not starting with '.')")
    return name


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and folders: whatever the block creates at the temporary path replaces
    `path` as a whole, so a crash never leaves a half-written output for DVC to cache.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written for {path}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """Hex SHA-256 of a file, read in chunks (the released VA-VAE .pt is 2.15 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (indent 2, trailing newline)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> dict:
    """A JSON file, or a ValueError that names it and says why it could not be read."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors file with a canonical header, written atomically.

    The Rust writer serialises the metadata map in hash order, which changes between runs;
    re-emitting the header JSON with sorted keys (same bytes otherwise, same length) makes
    equal contents give byte-identical files, which DVC hashing and our determinism tests need.
    """
    import struct

    from safetensors.torch import save

    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    canonical += b" " * (n - len(canonical))  # the writer pads the header with spaces to an 8-byte boundary
    if len(canonical) != n:
        raise RuntimeError(f"canonical safetensors header for {path} is longer than the original ({len(canonical)} > {n})")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(blob[:8])
            f.write(canonical)
            f.write(memoryview(blob)[8 + n:])


def load_torch_file(path: str | Path, what: str):
    """`torch.load` of an untrusted checkpoint: tensors and plain containers only, never code.

    `what` names the file in errors ("tokenizer checkpoint"). mmap keeps a multi-GB checkpoint on
    disk, so only the tensors used are paged in; it needs the zip format (torch >= 1.6 default),
    older tar/pickle files are read whole.
    """
    import pickle
    import zipfile

    import torch  # here, so that `mdgen split` and friends do not pay for importing torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph of how-to-bypass advice; keep only the line naming the culprit
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        culprit = [ln for ln in lines if "Unsupported" in ln or "WeightsUnpickler" in ln]
        reason = (culprit or lines or [""])[0].split(" Please use")[0]
        raise ValueError(f"refusing to load {path}: it needs arbitrary unpickling (code execution), which "
                         f"mdgen never does; only plain tensors are accepted (torch.load weights_only=True said: "
                         f"{reason}). Convert it to .safetensors in a trusted environment.") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"cannot read {what} {path} as a torch file: {e}") from e
