"""PSNR/SSIM: torchmetrics' SSIM, cropped to the valid region, against a direct 11x11-window computation."""
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mdgen.quality import psnr, ssim
from mdgen.simulate import sample_users, simulate_spectrogram, spectrogram_to_rgb


def ssim_direct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Wang et al. 2004 by the definition, in float64: a full 11x11 Gaussian window (sigma 1.5) at every
    pixel whose window lies inside the image, averaged over those pixels and the channels."""
    x = np.arange(11) - 5.0
    g = np.exp(-x**2 / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # every window: (N, H - 10, W - 10, C, 11, 11)
    pa, pb = (sliding_window_view(v.astype(np.float64), (11, 11), axis=(1, 2)) for v in (a, b))
    def avg(p):
        return np.einsum("nijcuv,uv->nijc", p, w)
    ma, mb = avg(pa), avg(pb)
    va, vb, cov = avg(pa * pa) - ma**2, avg(pb * pb) - mb**2, avg(pa * pb) - ma * mb
    s = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return s.mean(axis=(1, 2, 3))


def test_ssim_matches_the_direct_window_and_is_one_on_identical_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 20, 23, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 60, a.shape), 0, 255).astype(np.uint8)
    # float32 inside torchmetrics: 5e-8 off on these; chunk=2: the chunked loop must not mix images up
    np.testing.assert_allclose(ssim(a, b, chunk=2), ssim_direct(a, b), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-6)
    # a reversed (negative-stride) view, and tensors, are read as the images they show
    np.testing.assert_allclose(ssim(a[::-1], b[::-1]), ssim_direct(a, b)[::-1], atol=1e-6)
    np.testing.assert_allclose(ssim(torch.from_numpy(a), torch.from_numpy(b)), ssim_direct(a, b), atol=1e-6)


def test_ssim_of_spectrograms_is_the_valid_region_value_to_float32_rounding():
    # jet spectrograms have large flat areas at high values, where float32's E[x^2] - E[x]^2 loses the
    # most: 7e-6 at most on 48 of them (benchmarks/quality_speed.py). Averaging torchmetrics' reflect-padded
    # border in as well would move these by 4e-4 and 4e-3.
    users = sample_users(2, seed=0)
    images = np.stack([spectrogram_to_rgb(simulate_spectrogram(u, seed=3), 46.0) for u in users])
    a = images[:, 64:161, 80:177]                                                # 96x96 crops with structure
    blurred = (a[:, :-1, :-1].astype(float) + a[:, 1:, :-1] + a[:, :-1, 1:] + a[:, 1:, 1:]) / 4
    noisy = blurred + np.random.default_rng(0).normal(0, 4, blurred.shape)
    a, b = a[:, :-1, :-1], np.clip(noisy.round(), 0, 255).astype(np.uint8)
    expected = ssim_direct(a, b)
    assert 0.3 < expected.min() and expected.max() < 0.95  # neither trivial nor identical
    np.testing.assert_allclose(ssim(a, b), expected, rtol=0, atol=2e-5)


def test_psnr_of_a_known_error():
    a = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    b = np.full_like(a, 10)
    assert psnr(a, b)[0] == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr(np.concatenate([a, b])[::-1], np.concatenate([b, b]))[0] == np.inf
    # NHWC views of NCHW tensors, as vae_training passes them
    nchw_a, nchw_b = (torch.from_numpy(v).permute(0, 3, 1, 2).contiguous() for v in (a, b))
    assert psnr(nchw_a.permute(0, 2, 3, 1), nchw_b.permute(0, 2, 3, 1))[0] == pytest.approx(psnr(a, b)[0], abs=1e-12)
