"""PSNR/SSIM: the separable SSIM against a direct 11x11-window computation."""
import numpy as np
import pytest

from mdgen.quality import psnr, ssim


def ssim_direct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Wang et al. 2004 by the definition: a full 11x11 Gaussian window (sigma 1.5) at every valid pixel."""
    x = np.arange(11) - 5.0
    g = np.exp(-x**2 / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for im_a, im_b in zip(a.astype(np.float64), b.astype(np.float64)):
        vals = []
        for c in range(im_a.shape[2]):
            for i in range(im_a.shape[0] - 10):
                for j in range(im_a.shape[1] - 10):
                    pa, pb = im_a[i:i + 11, j:j + 11, c], im_b[i:i + 11, j:j + 11, c]
                    ma, mb = (w * pa).sum(), (w * pb).sum()
                    va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
                    cov = (w * pa * pb).sum() - ma * mb
                    vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
        out.append(np.mean(vals))
    return np.array(out)


def test_ssim_matches_the_direct_window_and_is_one_on_identical_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 20, 23, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 60, a.shape), 0, 255).astype(np.uint8)
    # chunk=2: the chunked loop must not mix images up
    np.testing.assert_allclose(ssim(a, b, chunk=2), ssim_direct(a, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-12)
    # a reversed (negative-stride) view is read as the images it shows
    np.testing.assert_allclose(ssim(a[::-1], b[::-1]), ssim_direct(a, b)[::-1], atol=1e-12)


def test_psnr_of_a_known_error():
    a = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    b = np.full_like(a, 10)
    assert psnr(a, b)[0] == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr(np.concatenate([a, b])[::-1], np.concatenate([b, b]))[0] == np.inf
