"""Gait measurements on micro-Doppler spectrograms: the same code for simulated and generated images.

Every function takes a level map (float [rows, cols] in [0, 1]; 0 is the bottom of the
dynamic range, 1 the image maximum) plus the image axes: `velocity` (m/s at each row, top row
first) and `time` (s at each column), as `mdgen.spectrogram.image_axes` gives: for simulated data the axes
its users.json records (where zero Doppler lies, which sign is up), for your own data those of params.yaml's
`data.axes` (by default the simulator's: zero Doppler at 0.87 of the height, approaching walkers above it).
The measures need only the velocity of each row: a walker on either side of zero, on an axis running either
way, is measured alike (the walker's side is the sign of its torso velocity). Get a level map
from a jet-coloured RGB image with `mdgen.spectrogram.jet_to_level`, or from a dB spectrogram
with `mdgen.spectrogram.db_to_level`.

    level = jet_to_level(np.asarray(Image.open("ID_3/7.png").convert("RGB")))
    velocity, time, _, _ = image_axes("data/simulated", *level.shape)
    m = measure_gait(level, velocity, time)
    m.torso_velocity, m.cycle_s, m.envelope_ratio
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import detrend

from mdgen.errors import DataError

# Jet below this level is dark-to-medium blue (green channel < 0.3): the "deep-blue background".
BACKGROUND_LEVEL = 0.2
# Limb envelope: the farthest row (from zero velocity) where the signal rises out of the
# background (level 0.25, a 5-row average, so single speckles do not count), taken at this
# percentile over the columns.
ENVELOPE_LEVEL = 0.25
ENVELOPE_MARGIN = 0.2  # 8 dB of a 40 dB range: ~3 std of a 5x3-averaged noise speckle
ENVELOPE_PERCENTILE = 95.0
# Half-width of the torso band: the pelvis surges up to +-0.3 m/s about its mean twice a cycle
# (Boulic's fore-aft translation, 0.021 H_t), and the band's brightest row need not be its
# middle, so the ridge is sought, and limb energy excluded, within +-0.6 m/s of the torso row.
TORSO_BAND_MPS = 0.6
TORSO_REFINE_MPS = 0.3  # second pass, centred on the first estimate
RIDGE_SMOOTH_MPS = 0.09  # three rows of the default image axis
# Plausible human gait cycle durations (s) searched by the autocorrelation (cadence 60-170 steps/min).
CYCLE_RANGE_S = (0.7, 2.0)


# --------------------------------------------------------------------------------------
# Background
# --------------------------------------------------------------------------------------

def background_fraction(level: np.ndarray, threshold: float = BACKGROUND_LEVEL) -> float:
    """Fraction of pixels in the deep-blue background."""
    return float(np.mean(level < threshold))


# --------------------------------------------------------------------------------------
# Torso
# --------------------------------------------------------------------------------------

def torso_row(level: np.ndarray) -> int:
    """Row of maximum mean level over time: the torso band."""
    return int(np.argmax(level.mean(axis=1)))


def torso_ridge(level: np.ndarray, velocity: np.ndarray, centre_v: float | None = None,
                band_mps: float = TORSO_BAND_MPS) -> np.ndarray:
    """Torso velocity (m/s) per column: the brightest row within `band_mps` of `centre_v`
    (default: the torso row), sub-row refined."""
    velocity = np.asarray(velocity, dtype=np.float64)
    step = abs(velocity[1] - velocity[0])
    centre = torso_row(level) if centre_v is None else int(np.argmin(np.abs(velocity - centre_v)))
    half = max(1, int(round(band_mps / step)))
    lo, hi = max(0, centre - half), min(level.shape[0], centre + half + 1)
    # a light smoothing (~0.09 m/s x 3 columns) lets the ridge follow the band, not one glint
    rows = max(3, int(round(RIDGE_SMOOTH_MPS / step)) | 1)
    band = uniform_filter(level[lo:hi].astype(np.float64), size=(rows, 3), mode="nearest")
    i = np.argmax(band, axis=0)
    j = np.clip(i, 1, band.shape[0] - 2)
    cols = np.arange(band.shape[1])
    y0, y1, y2 = band[j - 1, cols], band[j, cols], band[j + 1, cols]
    denom = y0 - 2 * y1 + y2
    offset = np.where((i == j) & (denom < 0), 0.5 * (y0 - y2) / np.where(denom < 0, denom, -1.0), 0.0)
    ridge_rows = lo + j + np.clip(offset, -0.5, 0.5)
    return np.interp(ridge_rows, np.arange(velocity.size), velocity)


def torso_velocity(level: np.ndarray, velocity: np.ndarray) -> float:
    """Torso (walking) Doppler velocity over the image, m/s.

    The ridge is found within TORSO_BAND_MPS of the torso row, then again within
    TORSO_REFINE_MPS of that first estimate, which keeps the swing thighs' flashes out of it.
    Each pass averages the ridge after dropping its 10 % fastest and 10 % slowest columns: the
    trunk surges symmetrically about its mean, the dropped tails are where a limb outshone it.
    """
    estimate = None
    for band in (TORSO_BAND_MPS, TORSO_REFINE_MPS):
        ridge = np.sort(torso_ridge(level, velocity, estimate, band))
        cut = ridge.size // 10
        estimate = float(np.mean(ridge[cut:ridge.size - cut]))
    return estimate


# --------------------------------------------------------------------------------------
# Limbs
# --------------------------------------------------------------------------------------

def limb_energy(level: np.ndarray, velocity: np.ndarray, torso_v: float | None = None,
                band_mps: float = TORSO_BAND_MPS) -> np.ndarray:
    """Per-column mean level of the limb rows: outside the torso band, on the walker's side.

    Rows beyond half the torso speed on the far side of zero hold only noise and are left out.
    """
    velocity = np.asarray(velocity)
    if torso_v is None:
        torso_v = torso_velocity(level, velocity)
    side = np.sign(torso_v) if torso_v != 0 else -1.0
    outside = np.abs(velocity - torso_v) > band_mps
    limbs = outside & (side * velocity > -0.5 * abs(torso_v))
    # A torso found next to an image edge (a noise sample, or a walker beside zero on an axis that ends just
    # under it) can leave no row on its side: then every row outside its band, or at the least every row,
    # so that such an image still gets a (wrong) cycle instead of an error.
    for rows in (limbs, outside, np.ones_like(limbs)):
        if rows.any():
            return level[rows].astype(np.float64).mean(axis=0)


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Unbiased, normalised autocorrelation of a linearly detrended series (lag 0 = 1).

    Detrending matters: the walker's range changes, so the limb level rises or falls over the image,
    and an uncorrected trend pulls every autocorrelation peak towards shorter lags.
    """
    x = detrend(np.asarray(x, dtype=np.float64))
    n = x.size
    f = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n]
    ac /= np.arange(n, 0, -1)  # unbiased: each lag averages over its own overlap
    return ac / ac[0] if ac[0] > 0 else ac


def gait_cycle(level: np.ndarray, velocity: np.ndarray, time: np.ndarray,
               cycle_range_s: tuple[float, float] = CYCLE_RANGE_S) -> float:
    """Gait cycle duration (s) from the autocorrelation of limb energy.

    Both legs (and arms) swing once a cycle, half a cycle apart, so limb energy repeats every
    step and, with any left/right difference, every cycle. The cycle c maximises
    ac(c/2) + ac(c)/2 over `cycle_range_s`: the step lag alone is often blurred by fading and
    noise, the cycle lag alone picks up the odd strong stride; together they agree.
    Lags beyond 3/4 of the image overlap too little to be used.
    """
    time = np.asarray(time, dtype=np.float64)
    dt = (time[-1] - time[0]) / (time.size - 1)
    ac = autocorrelation(limb_energy(level, velocity))
    lags = np.arange(ac.size)
    hi = min(cycle_range_s[1] / dt, 0.75 * ac.size)
    if hi <= cycle_range_s[0] / dt:
        raise DataError(f"an image of {time[-1] - time[0]:.2f} s is too short to hold a gait cycle "
                         f"of at least {cycle_range_s[0]} s twice")
    cycles = np.arange(cycle_range_s[0] / dt, hi, 0.1)
    score = np.interp(cycles / 2, lags, ac) + 0.5 * np.interp(cycles, lags, ac)
    return float(cycles[np.argmax(score)] * dt)


def noise_level(level: np.ndarray, velocity: np.ndarray, torso_v: float | None = None) -> float:
    """Median level of the noise: rows beyond 0.3 m/s on the far side of zero from the walker.

    Falls back to the image's 25th percentile when the axis has no such rows.
    """
    velocity = np.asarray(velocity, dtype=np.float64)
    if torso_v is None:
        torso_v = torso_velocity(level, velocity)
    side = np.sign(torso_v) if torso_v != 0 else -1.0
    far = side * velocity < -0.3
    if far.sum() < 8:
        return float(np.percentile(level, 25))
    return float(np.median(level[far]))


def limb_envelope(level: np.ndarray, velocity: np.ndarray, torso_v: float | None = None,
                  threshold: float | None = None, percentile: float = ENVELOPE_PERCENTILE) -> float:
    """How far (|m/s| from zero velocity, on the walker's side) the limbs reach.

    Per column, the farthest row whose level, averaged over 5 rows x 3 columns, exceeds
    `threshold` (default: ENVELOPE_LEVEL, or ENVELOPE_MARGIN above the noise level if that is
    higher, so that a noisy image does not count speckle as limbs); then the `percentile` of
    those reaches over the columns.
    """
    velocity = np.asarray(velocity, dtype=np.float64)
    if torso_v is None:
        torso_v = torso_velocity(level, velocity)
    if threshold is None:
        threshold = max(ENVELOPE_LEVEL, noise_level(level, velocity, torso_v) + ENVELOPE_MARGIN)
    side = np.sign(torso_v) if torso_v != 0 else -1.0
    smooth = uniform_filter(level.astype(np.float64), size=(5, 3), mode="nearest")
    reach = np.where(smooth > threshold, (side * velocity)[:, None], 0.0)
    return float(np.percentile(reach.max(axis=0), percentile))


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------

@dataclass
class GaitMeasures:
    torso_row: int              # row of maximum mean level (0 = top)
    torso_row_fraction: float   # torso_row / rows
    torso_velocity: float       # mean torso Doppler velocity, m/s (positive: approaching, on the default axes)
    cycle_s: float              # gait cycle duration
    steps: float                # steps per image = 2 * (time[-1] - time[0]) / cycle
    envelope_mps: float         # limb envelope |velocity|
    envelope_ratio: float       # envelope / |velocity of the torso row| (the band's distance from zero)
    background_fraction: float  # deep-blue pixels


def measure_gait(level: np.ndarray, velocity: np.ndarray, time: np.ndarray) -> GaitMeasures:
    """All gait measurements of one spectrogram image."""
    time = np.asarray(time, dtype=np.float64)
    row = torso_row(level)
    band_v = float(np.asarray(velocity)[row])
    tv = torso_velocity(level, velocity)
    cycle = gait_cycle(level, velocity, time)
    env = limb_envelope(level, velocity, tv)
    duration = time[-1] - time[0]
    return GaitMeasures(
        torso_row=row,
        torso_row_fraction=row / level.shape[0],
        torso_velocity=tv,
        cycle_s=cycle,
        steps=2 * duration / cycle,
        envelope_mps=env,
        envelope_ratio=env / abs(band_v) if band_v != 0 else float("inf"),
        background_fraction=background_fraction(level),
    )
