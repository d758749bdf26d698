"""Image reconstruction quality: PSNR and SSIM on uint8 RGB images, via torchmetrics.functional.

SSIM in float32: torchmetrics' float64 path has no fast CPU convolution for the full 11x11 window (the one
reason the project once hand-wrote it), while float32 agrees with float64 far below the figures' precision
(`python benchmarks/quality_speed.py` prints speed and agreement; benchmarks/README.md has them).
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

# Wang et al. 2004 reference settings, so figures compare with published ones. torchmetrics sizes a
# Gaussian window from sigma (int(3.5 sigma + 0.5) * 2 + 1 = 11 at 1.5; its kernel_size is then unused).
SSIM_SIGMA, SSIM_K1, SSIM_K2, PEAK = 1.5, 0.01, 0.03, 255.0
SSIM_BORDER = 5  # (11 - 1) // 2: window centres closer to an edge see pixels outside the image


def _nchw(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [N,H,W,C] array or tensor (any strides) -> [N,C,H,W] of `dtype`."""
    # left channels-last, not made contiguous: torch's float32 CPU convolution is faster on it
    # (benchmarks/README.md, "Measured in passing")
    return torch.as_tensor(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(dtype)


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images [N,H,W,C] (peak 255); identical images give inf."""
    # float64: exact squared-error sums, and cheap here (its log constants stay float32: 1e-6 dB)
    x, y = _nchw(a, torch.float64), _nchw(b, torch.float64)
    return peak_signal_noise_ratio(x, y, data_range=PEAK, reduction="none", dim=(1, 2, 3)).numpy()


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Per-image SSIM of uint8 images [N,H,W,C]: the mean over channels and valid pixels.

    Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, L=255, each channel on its
    own, averaged over the valid region only (window inside the image, as skimage and the reference
    code do). torchmetrics reflect-pads by 5 pixels and, since 1.5, also averages over that border
    (before 1.5 it cropped it), which moves SSIM by up to 5e-3 on spectrograms; so the per-pixel map
    (`return_full_image`) is cropped here, which gives the valid-region value under every version.
    The one difference left: it clamps variances that float rounding makes negative to 0.
    `chunk` images at a time bound the memory (5 blurred float32 maps per image).
    """
    out = []
    for i in range(0, len(a), chunk):
        x, y = _nchw(a[i:i + chunk], torch.float32), _nchw(b[i:i + chunk], torch.float32)
        _, full = structural_similarity_index_measure(x, y, sigma=SSIM_SIGMA, data_range=PEAK, k1=SSIM_K1,
                                                      k2=SSIM_K2, reduction="none", return_full_image=True)
        valid = full[..., SSIM_BORDER:-SSIM_BORDER, SSIM_BORDER:-SSIM_BORDER]  # (n, C, H - 10, W - 10)
        out.append(valid.double().mean(dim=(1, 2, 3)))
    return torch.cat(out).numpy() if out else np.zeros(0)
