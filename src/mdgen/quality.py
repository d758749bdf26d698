"""Image reconstruction quality: PSNR and SSIM on uint8 RGB images."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images [N,H,W,C] (peak 255); identical images give inf."""
    a, b = (torch.as_tensor(np.ascontiguousarray(x)).double() for x in (a, b))
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(255.0**2 / mse)).numpy()


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Per-image SSIM of uint8 images [N,H,W,C], averaged over channels.

    Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, L=255, valid
    region only -- the common reference settings, so figures compare with published ones.
    The 2-D Gaussian is the outer product of two 1-D ones, so the blur runs as an 11-tap row pass
    and an 11-tap column pass (22 instead of 121 multiply-adds per pixel, which matters in float64: it
    has no fast CPU convolution; timing in benchmarks/README.md), `chunk` images at a time.
    """
    a, b = np.asarray(a), np.asarray(b)
    g = _gaussian_1d()
    out = []
    for i in range(0, len(a), chunk):
        x = torch.as_tensor(np.ascontiguousarray(a[i:i + chunk])).double().permute(0, 3, 1, 2)
        y = torch.as_tensor(np.ascontiguousarray(b[i:i + chunk])).double().permute(0, 3, 1, 2)
        n, c = x.shape[:2]
        # the five maps to blur as channels of one tensor: x, y, x^2, y^2, xy
        maps = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(n * 5 * c, 1, *x.shape[2:])
        maps = F.conv2d(F.conv2d(maps, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
        mu_a, mu_b, aa, bb, ab = maps.reshape(n, 5, c, *maps.shape[2:]).unbind(1)
        var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out.append(s.mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy() if out else np.zeros(0)
