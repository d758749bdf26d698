"""PSNR/SSIM of mdgen.quality (torchmetrics) against the former hand-written float64 SSIM: speed and agreement.

    PYTHONPATH=src python benchmarks/quality_speed.py [--images 16] [--repeats 5] [--threads 2] [--float64]

Originals are simulated spectrograms (256 px jet images); "reconstructions" are them blurred
(area-down- and bilinear-upsampled by 2, 4 or 8) plus Gaussian noise, rounded to uint8 -- roughly the
range of a tokenizer's errors. Prints median and fastest wall and median CPU seconds per call on
`--images` images, and the largest per-image differences over all three blur levels; `--float64` also
times torchmetrics' float64 SSIM (slow: 10-15 s for 16 images on 2 threads).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from mdgen.quality import PEAK, psnr, ssim
from mdgen.simulate import RadarConfig, sample_users, simulate_spectrogram, spectrogram_to_rgb


def former_ssim(a: np.ndarray, b: np.ndarray, chunk: int = 16) -> np.ndarray:
    """mdgen.quality.ssim as of commit 6d64830: separable 11-tap Gaussian blur in float64, valid region."""
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    out = []
    for i in range(0, len(a), chunk):
        x = torch.as_tensor(np.ascontiguousarray(a[i:i + chunk])).double().permute(0, 3, 1, 2)
        y = torch.as_tensor(np.ascontiguousarray(b[i:i + chunk])).double().permute(0, 3, 1, 2)
        n, c = x.shape[:2]
        maps = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(n * 5 * c, 1, *x.shape[2:])
        maps = F.conv2d(F.conv2d(maps, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
        mu_a, mu_b, aa, bb, ab = maps.reshape(n, 5, c, *maps.shape[2:]).unbind(1)
        var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out.append(s.mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy()


def former_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """mdgen.quality.psnr as of commit 6d64830."""
    a, b = (torch.as_tensor(np.ascontiguousarray(x)).double() for x in (a, b))
    return (10 * torch.log10(255.0**2 / ((a - b) ** 2).flatten(1).mean(1))).numpy()


def torchmetrics_ssim(a: np.ndarray, b: np.ndarray, dtype: torch.dtype, crop: bool = True) -> np.ndarray:
    """torchmetrics' SSIM on all images at once; crop=False: its own average, reflect-padded border included."""
    x, y = (torch.from_numpy(v).permute(0, 3, 1, 2).to(dtype) for v in (a, b))
    mean, full = structural_similarity_index_measure(x, y, data_range=PEAK, reduction="none", return_full_image=True)
    return (full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)) if crop else mean).double().numpy()


def degraded(images: np.ndarray, factor: int, noise: float, seed: int) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    y = F.interpolate(F.interpolate(x, scale_factor=1 / factor, mode="area"), scale_factor=factor, mode="bilinear")
    y = y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """Median wall, fastest wall and median CPU seconds of `repeats` calls after one warm-up call
    (the fastest is the steadier figure on a machine others share)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(min(wall)), float(np.median(cpu))


def main(images: int, repeats: int, threads: int, float64: bool) -> None:
    torch.set_num_threads(threads)
    radar = RadarConfig()
    users = sample_users(8, seed=0)
    originals = np.stack([spectrogram_to_rgb(simulate_spectrogram(users[i % len(users)], 1000 + i, radar),
                                             radar.dynamic_range_db, radar.image_size) for i in range(images)])
    levels = {f: degraded(originals, f, noise, seed=f) for f, noise in ((2, 2.0), (4, 5.0), (8, 10.0))}

    print(f"speed: {images} images of {originals.shape[1]} px, {threads} threads, {repeats} calls")
    a, b = originals, levels[4]
    rows = [("former ssim (float64, separable)", lambda: former_ssim(a, b), repeats),
            ("mdgen.quality.ssim (torchmetrics float32)", lambda: ssim(a, b), repeats),
            ("former psnr (float64)", lambda: former_psnr(a, b), repeats),
            ("mdgen.quality.psnr (torchmetrics float64)", lambda: psnr(a, b), repeats)]
    if float64:
        rows.append(("torchmetrics ssim float64 (one call)", lambda: torchmetrics_ssim(a, b, torch.float64), 1))
    times = {name: timed(fn, n) for name, fn, n in rows}
    for name, (wall, fastest, cpu) in times.items():
        print(f"  {name:44s} {wall:7.3f} s wall (fastest {fastest:.3f}) {cpu:7.3f} s cpu, medians")
    old, new = times["former ssim (float64, separable)"], times["mdgen.quality.ssim (torchmetrics float32)"]
    print(f"  ssim speed-up, former / new: {old[0] / new[0]:.1f}x median wall, {old[1] / new[1]:.1f}x fastest wall, "
          f"{old[2] / new[2]:.1f}x median cpu")

    print("agreement with the former code, max |difference| per image, per blur level (SSIM range):")
    for f, rec in levels.items():
        ref = former_ssim(originals, rec)
        d_psnr = np.abs(psnr(originals, rec) - former_psnr(originals, rec)).max()
        d_ssim = np.abs(ssim(originals, rec) - ref).max()
        d_f64 = np.abs(torchmetrics_ssim(originals, rec, torch.float64) - ref).max() if float64 else float("nan")
        d_uncropped = np.abs(torchmetrics_ssim(originals, rec, torch.float32, crop=False) - ref).max()
        print(f"  blur {f} (ssim {ref.min():.3f}-{ref.max():.3f}): psnr {d_psnr:.1e} dB, ssim {d_ssim:.1e}; "
              f"torchmetrics float64 {d_f64:.1e}; its own uncropped average {d_uncropped:.1e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--float64", action="store_true", help="also time and compare torchmetrics' float64 SSIM")
    args = parser.parse_args()
    main(args.images, args.repeats, args.threads, args.float64)
