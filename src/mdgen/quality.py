"""Image reconstruction quality: PSNR and SSIM on uint8 RGB images."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images [N,H,W,C] (peak 255); identical images give inf."""
    a, b = torch.as_tensor(np.asarray(a)).double(), torch.as_tensor(np.asarray(b)).double()
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(255.0**2 / mse)).numpy()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image SSIM of uint8 images [N,H,W,C], averaged over channels.

    Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, L=255, valid
    region only -- the common reference settings, so figures compare with published ones.
    """
    a = torch.as_tensor(np.asarray(a)).double().permute(0, 3, 1, 2)
    b = torch.as_tensor(np.asarray(b)).double().permute(0, 3, 1, 2)
    c = a.shape[1]
    w = _gaussian_window().expand(c, 1, 11, 11).contiguous()
    blur = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3)).numpy()
