"""FID and KID of mdgen.metrics against torchmetrics' FrechetInceptionDistance and KernelInceptionDistance.

The features go through an identity feature module, so both sides see the same float64 [N, D]
features: N > D (full-rank covariances) and N < D (singular ones: the normal case in mdgen, ~100
samples of 128-256 features, where a matrix square root needs care).
"""
import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from mdgen.metrics import frechet_distance, kernel_inception_distance

# (N, D): full rank, then rank-deficient covariances
SHAPES = [(100, 16), (40, 128)]


class Features(nn.Module):
    """The identity as a feature extractor: the "images" are the features. torchmetrics sizes its FID
    state from `num_features` (without it, it runs a 3x299x299 dummy image through the module)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def feature_sets(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 [n, d] sets from different Gaussians: other mean, scale and correlations."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    b = 0.8 * rng.standard_normal((n, d)) @ (np.eye(d) + 0.1 * rng.standard_normal((d, d))) + 0.3
    return a, b


def torchmetrics_fid(a: np.ndarray, b: np.ndarray) -> float:
    fid = FrechetInceptionDistance(feature=Features(a.shape[1]))
    fid.update(torch.from_numpy(a), real=True)
    fid.update(torch.from_numpy(b), real=False)
    return float(fid.compute())  # float64 features: it accumulates and returns float64


def fid_by_nuclear_norm(a: np.ndarray, b: np.ndarray) -> float:
    """FID with tr((S_a S_b)^(1/2)) as the nuclear norm of Xa Xb^T / sqrt((n_a - 1)(n_b - 1)), X centred.

    The nonzero eigenvalues of S_a S_b = Xa^T Xa Xb^T Xb / c are those of M M^T with M = Xa Xb^T, so
    their square roots are the singular values of M: no square root of a singular D x D matrix.
    """
    xa, xb = a - a.mean(0), b - b.mean(0)
    mu = a.mean(0) - b.mean(0)
    cross = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    return float(mu @ mu + (xa**2).sum() / (len(a) - 1) + (xb**2).sum() / (len(b) - 1) - 2 * cross)


@pytest.mark.parametrize("n, d", SHAPES)
def test_fid_matches_torchmetrics_and_the_nuclear_norm_form(n, d):
    a, b = feature_sets(n, d)
    ours = frechet_distance(a, b)
    # N > D: all three agree to rounding. N < D: D - N + 1 eigenvalues are 0 in exact arithmetic and
    # ~1e-15 |S| in floating point; their square roots (~3e-8 |S|^1/2 each) shift FID by ~1e-8 relative
    # (measured at N=40, D=128: ours -3.6e-6, torchmetrics -7.9e-6 off the exact 191.936)
    rtol = 1e-10 if n > d else 1e-6
    assert ours == pytest.approx(torchmetrics_fid(a, b), rel=rtol)
    assert ours == pytest.approx(fid_by_nuclear_norm(a, b), rel=rtol)


def torchmetrics_kid(a: np.ndarray, b: np.ndarray, subsets: int, subset_size: int) -> tuple[float, float]:
    kid = KernelInceptionDistance(feature=Features(a.shape[1]), subsets=subsets, subset_size=subset_size)
    kid.update(torch.from_numpy(a), real=True)
    kid.update(torch.from_numpy(b), real=False)
    with torch.random.fork_rng():  # its subsets come from the global torch RNG
        torch.manual_seed(0)
        mean, std = kid.compute()
    return float(mean), float(std)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
@pytest.mark.parametrize("n, d", SHAPES)
def test_kid_matches_torchmetrics_on_whole_sets(n, d):
    # subset_size = N: every subset is the whole set in some order, so both compute the same U-statistic
    # (polynomial kernel degree 3, gamma 1/D, coef 1, unbiased MMD^2) and the spread over subsets is 0
    a, b = feature_sets(n, d)
    ours = kernel_inception_distance(a, b, subsets=3, subset_size=n)
    theirs, theirs_std = torchmetrics_kid(a, b, subsets=3, subset_size=n)
    assert ours["kid"] == pytest.approx(theirs, rel=1e-10)
    assert ours["kid_std"] == pytest.approx(0, abs=1e-12) and theirs_std == pytest.approx(0, abs=1e-12)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
@pytest.mark.parametrize("n, d", SHAPES)
def test_kid_subset_means_agree_with_torchmetrics_within_subset_noise(n, d):
    # different random subsets (numpy vs torch RNG): each mean is off the all-subsets mean by about
    # std / sqrt(subsets); allow 4 standard errors of the difference (0.05 and 0.035 here). A biased MMD^2
    # (kernel diagonal kept) would sit 0.26 and 1.1 higher on these sets.
    a, b = feature_sets(n, d, seed=1)
    subsets, size = 100, n // 2
    ours = kernel_inception_distance(a, b, subsets=subsets, subset_size=size, seed=0)
    theirs, theirs_std = torchmetrics_kid(a, b, subsets=subsets, subset_size=size)
    standard_error = np.hypot(ours["kid_std"], theirs_std) / np.sqrt(subsets)
    assert abs(ours["kid"] - theirs) < 4 * standard_error
    assert ours["kid_std"] == pytest.approx(theirs_std, rel=0.3)  # both the spread over subsets (ddof 0)
