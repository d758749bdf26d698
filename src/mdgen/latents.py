"""Latent datasets: image folders -> tokenizer latents, their files and their statistics.

File layout follows upstream LightningDiT's extractor (`latents`, `latents_flip`,
`labels`) so its training code can read what we write, plus string metadata that
records where the latents came from.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mdgen.errors import BadFileError, DataError, MissingFileError, ParamsError
from mdgen.accel import autocast_dtype
from mdgen.images import load_images, to_tensor, to_uint8
from mdgen.io import atomic_path, load_torch_file, read_safetensors, save_safetensors
from mdgen.params import ExtractConfig

FLIPS = {"none": None, "time": 3, "doppler": 2}  # tensor dim flipped: time = width, Doppler = height


def encode_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype `extract` encodes in: as `mdgen.accel.autocast_dtype`, except that `auto` stays fp32 on
    a CPU even with native bf16, since the latents are the dataset and must not change with the CPU."""
    return autocast_dtype(device, "fp32" if precision == "auto" and device.type == "cpu" else precision)


@torch.no_grad()
def encode_files(model, files: list[Path], config: ExtractConfig, *, image_size: int, seed: int,
                 device: str | torch.device = "cpu", progress: bool = True,
                 desc: str = "extract", keep_mean: bool = False) -> dict[str, torch.Tensor]:
    """Encode image files to latents [N,C,h,w] float32 (and their flipped twins) as the `extract` section says.

    With config.sample_posterior the latent is mean + std * eps as upstream's `posterior.sample()`,
    but eps comes from a CPU generator seeded with `seed`, so the result is the same on
    every run and every device. Precision: `encode_dtype`. `keep_mean`: also the posterior means of the
    unflipped images under "mean", which `reconstruct` decodes without encoding the images a second time.
    """
    flip = config.flip
    if flip not in FLIPS:
        raise ParamsError(f"extract.flip = {flip!r}: expected one of {', '.join(FLIPS)}")
    device = torch.device(device)
    amp = encode_dtype(device, config.precision)
    batch_size = config.batch_size
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {"latents": [], "latents_flip": [], "mean": []}
    for batch in tqdm(image_batches(files, image_size, batch_size), total=math.ceil(len(files) / batch_size),
                      desc=desc, unit="batch", disable=not progress):
        x = to_tensor(batch).to(device)
        views = {"latents": x}
        if FLIPS[flip] is not None:
            views["latents_flip"] = x.flip(FLIPS[flip])
        for key, v in views.items():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                post = model.encode(v)
            mean, std = post.mean.float(), post.std.float()
            if config.sample_posterior:
                eps = torch.randn(mean.shape, generator=gen, dtype=torch.float32).to(device)
                z = mean + std * eps
            else:
                z = mean
            out[key].append(z.cpu())
            if keep_mean and key == "latents":
                out["mean"].append(mean.cpu())
    return {k: torch.cat(v) for k, v in out.items() if v}


def save_latents(path: str | Path, tensors: dict[str, torch.Tensor], labels: torch.Tensor, *,
                 users: list[str], tokenizer_sha256: str, image_size: int, sample_posterior: bool,
                 extra: dict[str, str] | None = None) -> None:
    meta = {"users": json.dumps(users), "tokenizer_sha256": tokenizer_sha256, "image_size": str(image_size),
            "sample_posterior": json.dumps(sample_posterior), **(extra or {})}
    data = {k: v.contiguous().float() for k, v in tensors.items()}
    data["labels"] = labels.to(torch.int64).contiguous()
    save_safetensors(data, path, meta)


def read_latents_meta(path: str | Path) -> dict:
    """Metadata of a latents file, `users` decoded; keys and shapes under 'tensors'."""
    meta, shapes = read_safetensors(path, "latents file", tensors=False)
    if "users" not in meta:
        raise BadFileError(f"{path}: no 'users' metadata (expected a latents file written by `mdgen extract`)")
    meta["users"] = json.loads(meta["users"])
    meta["tensors"] = shapes
    return meta


def image_batches(files: list[Path], image_size: int, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 [B, image_size, image_size, 3] batches of `files`, in order (`mdgen.images.load_images`)."""
    for start in range(0, len(files), batch_size):
        yield load_images(files[start:start + batch_size], image_size)


@torch.no_grad()
def reconstruct(model, files: list[Path], config: ExtractConfig, *, image_size: int,
                device: str | torch.device = "cpu",
                means: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(originals, reconstructions) as uint8 [N,H,W,3] through the posterior mean, and images/s.

    Encodes as `encode_files` does, unless `means` holds its posterior means of these files already
    (`keep_mean`: the same batches, so the same values), and decodes in that precision too, except fp16
    (see `mdgen.accel.autocast_dtype`)."""
    device = torch.device(device)
    batch_size = config.batch_size
    if means is not None and len(means) != len(files):
        raise ValueError(f"reconstruct: {len(means)} posterior means for {len(files)} files")
    amp = encode_dtype(device, config.precision)
    decode_amp = None if amp is None else autocast_dtype(device, config.precision, fp16_safe=False)
    originals, recons = [], []
    t0 = time.perf_counter()
    for start, batch in zip(range(0, len(files), batch_size), image_batches(files, image_size, batch_size)):
        if means is not None:
            z = means[start:start + batch_size].to(device)
        else:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                z = model.encode(to_tensor(batch).to(device)).mode()
        with torch.autocast(device.type, dtype=decode_amp, enabled=decode_amp is not None):
            rec = model.decode(z)
        originals.append(batch)
        recons.append(to_uint8(rec.float().cpu()))
    rate = len(files) / max(time.perf_counter() - t0, 1e-9)
    return np.concatenate(originals), np.concatenate(recons), rate


def compute_stats(latents: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel mean and std over (N, H, W) in float64, saved as float32 [1,C,1,1].

    Upstream estimates these on an unseeded random 10k subset; all latents in float64
    makes the file deterministic and independent of the subset.
    """
    if latents.ndim != 4:
        raise ValueError(f"latents of shape {tuple(latents.shape)}: expected [N, C, H, W]")
    z = latents.double()
    if not torch.isfinite(z).all():
        bad = (~torch.isfinite(z)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise BadFileError(f"latents contain NaN/Inf (first offending samples: {bad})")
    if z.shape[0] * z.shape[2] * z.shape[3] < 2:
        raise DataError("need at least 2 latent values per channel to compute a std")
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    std = z.std(dim=(0, 2, 3), keepdim=True)  # unbiased, as upstream's torch.std
    dead = (std.flatten() <= 1e-12).nonzero().flatten().tolist()
    if dead:
        raise BadFileError(f"latent channels {dead} have zero std: the tokenizer produced constant channels")
    return {"mean": mean.float(), "std": std.float()}


def load_stats(path: str | Path, channels: int | None = None) -> dict[str, torch.Tensor]:
    """`latents_stats.pt` in the upstream format; shapes checked against `channels`."""
    if not Path(path).is_file():
        raise MissingFileError(f"latent stats {path} not found (run the `stats` stage)")
    stats = load_torch_file(path, "latent stats")
    if not isinstance(stats, dict) or not {"mean", "std"} <= set(stats):
        raise BadFileError(f"{path}: expected a dict with 'mean' and 'std' tensors")
    for k in ("mean", "std"):
        t = stats[k]
        if t.ndim != 4 or t.shape[0] != 1 or t.shape[2:] != (1, 1) or (channels and t.shape[1] != channels):
            want = f"[1, {channels or 'C'}, 1, 1]"
            raise BadFileError(f"{path}: '{k}' has shape {list(t.shape)}, expected {want}")
    return {"mean": stats["mean"].float(), "std": stats["std"].float()}


def save_stats(path: str | Path, stats: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"mean": stats["mean"].float().contiguous(), "std": stats["std"].float().contiguous()}, tmp)


def normalize(z: torch.Tensor, stats: dict[str, torch.Tensor], multiplier: float = 1.0) -> torch.Tensor:
    return (z - stats["mean"].to(z)) / stats["std"].to(z) * multiplier


def denormalize(z: torch.Tensor, stats: dict[str, torch.Tensor], multiplier: float = 1.0) -> torch.Tensor:
    return z * stats["std"].to(z) / multiplier + stats["mean"].to(z)
