"""Files: image folders in the real-data layout, atomic writes, JSON."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from mdgen.errors import BadFileError, BusyError, DataError, MissingFileError, OutputPathError

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
        raise MissingFileError(f"data folder {data_dir} " + ("is a file" if data_dir.exists() else "does not exist")
                               + " (expected a folder with one sub-folder per user)")
    users = sorted((p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
    if not users:
        raise DataError(f"data folder {data_dir} has no user sub-folders (expected e.g. {data_dir}/ID_1/*.png)")
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
        raise DataError(f"{source}: person name {name!r} is not a plain folder name "
                         "(expected e.g. ID_3: no path separators, not empty, not starting with '.')")
    return name


TEMP_SUFFIX = ".tmp"  # every temporary name mdgen writes ends so, and starts with a dot


@contextlib.contextmanager
def atomic_path(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    `folder`: the block writes a folder (replacing a previous folder of that name as a whole), else
    a file. Whatever the block creates replaces `path` in one rename, so a crash never leaves a
    half-written output for DVC to cache. It never destroys what it would not have written: a folder
    where a file goes, or a file where a folder goes, is an OutputPathError before the block runs.
    The temporary folder's name is unique per call, so two processes never write the same temp file.
    """
    path = Path(path)
    check_output_path(path, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written for {path}")
        if target.is_dir() != folder:
            raise RuntimeError(f"{path}: the block wrote a {'folder' if target.is_dir() else 'file'}, "
                               f"atomic_path(folder={folder}) expected the other")
        check_output_path(path, folder)  # again: something may have appeared there meanwhile
        if folder and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_path(path: str | Path, folder: bool = False) -> None:
    """An OutputPathError unless `path` is free for a file (`folder` False) or a folder: a missing path, or one of that kind."""
    path = Path(path)
    if folder and (path.is_file() or path.is_symlink() and not path.is_dir()):
        raise OutputPathError(f"{path} is an existing file; a folder of outputs goes there. Remove or rename it, "
                              "or choose another output path")
    if not folder and path.is_dir():
        raise OutputPathError(f"{path} is an existing folder; an output file goes there, and mdgen never replaces a "
                              "folder with a file. Give a file path (e.g. inside that folder)")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputPathError(f"{path}: {parent} is an existing file, so nothing can be written beneath it")
            break


def remove_stale_temps(folder: str | Path) -> list[str]:
    """Delete the temporary files and folders (`.<name>.<random>.tmp`) a killed process left in `folder`.

    Only safe while this process holds the folder's writer lock (`exclusive_writer`): then no live
    process is writing there, and whatever temp names remain belong to a dead one. Returns their names.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    return [p.name for p in stale]


@contextlib.contextmanager
def exclusive_writer(folder: str | Path) -> Iterator[list[str]]:
    """Hold the writer lock of an output folder for the block: one process writes it at a time.

    The lock is `.<folder>.lock` beside the folder (not inside it, where DVC would take it for part of
    the output), an OS file lock that a killed process releases with its life. A second writer gets a
    BusyError at once naming the folder and the process that holds it. Checks that the folder is
    writable, then removes what a killed writer left (`remove_stale_temps`); yields those names.
    """
    import filelock  # installed with DVC; imported here so that reading files does not pay for it

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)  # the folder itself may appear only when complete (`sample`)
    lock_path = folder.parent / f".{folder.name}.lock"
    lock = filelock.FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        try:
            holder = lock_path.read_text().strip() or "unknown process"
        except OSError:
            holder = "unknown process"
        raise BusyError(f"{folder} is being written by another process ({holder}); wait for it to finish or stop "
                        f"it (its lock: {lock_path})") from None
    try:
        lock_path.write_text(f"pid {os.getpid()} on {socket.gethostname()}, `{' '.join(sys.argv)}`, "
                             f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        check_writable(folder)
        yield remove_stale_temps(folder)
    finally:
        lock.release()


def check_writable(folder: str | Path) -> None:
    """An OutputPathError naming `folder` when this process cannot create files in it, or in the parent it
    will be made in (say, a root-owned models/ of a user's run): before any work, not at the first checkpoint."""
    folder = Path(folder)
    where = folder if folder.is_dir() else folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=TEMP_SUFFIX, dir=where)
    except OSError as e:
        raise OutputPathError(f"{where} is not writable by this process ({e.strerror}); fix its permissions or "
                              "run as its owner") from None
    os.close(fd)
    os.unlink(probe)


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


def write_headline(path: str | Path, numbers: dict[str, float | None]) -> None:
    """A declared metrics file: its numbers to 4 significant digits (what tells two runs apart; the details file
    beside it keeps full precision), so that `dvc metrics show` prints every stage's in 200 columns."""
    write_json(path, {k: None if v is None else float(f"{v:.4g}") for k, v in numbers.items()})


def details_of(metrics_path: str | Path) -> Path:
    """Where a stage writes the details behind its headline metrics file: metrics/details/<name> for
    metrics/<name> (declared metrics hold the numbers compared between runs, details the rest)."""
    metrics_path = Path(metrics_path)
    return metrics_path.parent / "details" / metrics_path.name


def read_json(path: str | Path) -> dict:
    """A JSON file, or an error that names it: MissingFileError, or BadFileError saying why it could not be read."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path} not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise BadFileError(f"{path}: cannot read ({e})") from None


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


# what to do about a model, tokenizer or latent file that is there but unreadable (a killed copy, a
# partial `dvc pull`): every such error ends with it
RESTORE_HINT = "re-create it with `dvc repro`, or restore it from the DVC cache with `dvc checkout`"


def read_safetensors(path: str | Path, what: str, tensors: bool = True) -> tuple[dict, dict[str, tuple]]:
    """(metadata, {name: tensor}) of a safetensors file, or with tensors=False (metadata, {name: shape}) without
    reading the weights. A missing file is a MissingFileError, a truncated or corrupt one a BadFileError naming
    it (`what`: "latents file") and how to get it back."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            body = {k: (f.get_tensor(k) if tensors else tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as e:  # a cut-off copy: a bad header, or data past its end
        raise BadFileError(f"cannot read {what} {path}: truncated or corrupt ({e}); {RESTORE_HINT}") from None
    return meta, body


def load_torch_file(path: str | Path, what: str):
    """`torch.load` of an untrusted checkpoint: tensors and plain containers only, never code.

    `what` names the file in errors ("tokenizer checkpoint"). mmap keeps a multi-GB checkpoint on
    disk, so only the tensors used are paged in; it needs the zip format (torch >= 1.6 default),
    older tar/pickle files are read whole. A missing file is a MissingFileError; a truncated one, or
    one that would need code to unpickle, a BadFileError naming it.
    """
    import pickle
    import zipfile

    import torch  # here, so that `mdgen split` and friends do not pay for importing torch

    if not Path(path).is_file():
        raise MissingFileError(f"{what} {path} " + ("is a folder, not a file" if Path(path).is_dir() else "not found"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph of how-to-bypass advice; keep only the line naming the culprit
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        culprit = [ln for ln in lines if "Unsupported" in ln or "WeightsUnpickler" in ln]
        reason = (culprit or lines or [""])[0].split(" Please use")[0]
        with open(path, "rb") as f:
            # a torch zip, or a raw pickle's PROTO opcode: anything else is no checkpoint at all
            is_pickle = zipfile.is_zipfile(path) or f.read(1) == b"\x80"
        if not is_pickle:
            raise BadFileError(f"cannot read {what} {path}: truncated or corrupt (not a torch checkpoint); "
                               f"{RESTORE_HINT}") from None
        raise BadFileError(f"refusing to load {path}: it needs arbitrary unpickling (code execution), which "
                           f"mdgen never does; only plain tensors are accepted (torch.load weights_only=True said: "
                           f"{reason}). Convert it to .safetensors in a trusted environment.") from None
    # what torch.load raises on a cut-off file: miniz's RuntimeError or an OSError for a zip, EOFError
    # or the unpickler's IndexError for a pickle that stops mid-way, and KeyError for bytes that are no
    # pickle at all (the unpickler reads an opcode it does not know)
    except (RuntimeError, EOFError, OSError, IndexError, KeyError) as e:
        reason = str(e).split(". ")[0].strip() or type(e).__name__  # miniz adds a paragraph of advice
        raise BadFileError(f"cannot read {what} {path}: truncated or corrupt ({reason}); {RESTORE_HINT}") from e
