"""Spectrogram images: their jet colour scale, its inversion back to levels, and their axes.

A spectrogram image (a simulated PNG, a user's own recording, a generated sample) shows the top
`dynamic_range_db` of a dB spectrogram as a level in [0, 1] (0: the bottom of the range, 1: the image
maximum) painted with matplotlib's jet; rows are Doppler velocity, positive (towards the radar) up, zero
near the bottom, columns are time. The simulator (`mdgen.simulate`) paints with these; the gait measures
(`mdgen.kinematics`, `mdgen.metrics`) and the texture card (`mdgen.texture`) read images back and
evaluation places them on `image_axes`, none of them importing the simulator.

    rgb = level_to_rgb(db_to_level(db, 46.0))                          # uint8 [H, W, 3]
    level = jet_to_level(rgb)                                          # float32 [H, W]
    velocity, time, manifest, source = image_axes("data/simulated", 256, 256)
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from scipy.spatial import cKDTree

from mdgen.errors import BadFileError

# --------------------------------------------------------------------------------------
# Image axes
# --------------------------------------------------------------------------------------

# The axes of the 77 GHz FMCW gait recordings this project targets; the simulator's RadarConfig
# takes its defaults from here, and data without a simulator manifest is assumed to have them unless
# params.yaml's data.axes says otherwise. Rows run from IMAGE_V_TOP_MPS at the top edge to
# IMAGE_V_BOTTOM_MPS at the bottom edge (Doppler velocity, positive towards the radar). The real set
# shows an approaching walker: the stance feet (zero Doppler) meet the lower edge of the energy at
# about 0.87 of the height, the torso line sits at 0.64 (shape card: 0.643 +- 0.023), and the swing
# limbs rise above it to ~2.6x the torso's distance from zero. On this axis zero lies at row 222 of
# 256 (0.868), a 1.2 m/s torso at 0.642, and the 0.7 m/s below zero hold the stance's spread and the
# clutter notch, while the receiver's mirror image of the torso falls off the image.
IMAGE_V_TOP_MPS = 4.6
IMAGE_V_BOTTOM_MPS = -0.7
# about two gait cycles (four steps) of an average walker (D_c ~ 1.1 s), as in the real data
IMAGE_DURATION_S = 2.3


def velocity_axis(rows: int, top: float = IMAGE_V_TOP_MPS, bottom: float = IMAGE_V_BOTTOM_MPS) -> np.ndarray:
    """Velocity (m/s) at the centre of each of `rows` rows, the top edge at `top`, the bottom edge at `bottom`."""
    step = (top - bottom) / rows
    return top - (np.arange(rows) + 0.5) * step


def time_axis(columns: int, duration_s: float = IMAGE_DURATION_S) -> np.ndarray:
    """Time (s) at the centre of each of `columns` columns, the first at 0 and the last at duration_s."""
    return np.linspace(0.0, duration_s, columns)


def image_axes(data_dir: str | Path, height: int, width: int, v_top: float = IMAGE_V_TOP_MPS,
               v_bottom: float = IMAGE_V_BOTTOM_MPS, duration_s: float = IMAGE_DURATION_S,
               ) -> tuple[np.ndarray, np.ndarray, dict | None, str]:
    """(velocity per row, time per column, users.json or None, source) for images of height x width.

    Simulated data: the axes its users.json records (`image_axes`, written by
    `mdgen.simulate.simulate_dataset`: row-centre velocities of the top and bottom rows, first and last
    column times), rescaled to the image size. Other data: the edges `v_top`, `v_bottom` and the span
    `duration_s` given (params.yaml's data.axes; the defaults are the simulator's), so absolute numbers are as
    right as those are, while the generated-vs-real comparison stays on one scale either way.
    """
    manifest_path = Path(data_dir) / "users.json"
    if not manifest_path.is_file():
        return (velocity_axis(height, v_top, v_bottom), time_axis(width, duration_s), None,
                f"assumed (data.axes: {v_top:g} to {v_bottom:g} m/s, {duration_s:g} s)")
    manifest = json.loads(manifest_path.read_text())
    try:
        v, t = manifest["image_axes"]["velocity_mps"], manifest["image_axes"]["time_s"]
        step = (v["top"] - v["bottom"]) / (v["rows"] - 1)
        top_edge, bottom_edge = v["top"] + step / 2, v["bottom"] - step / 2
        first, last = t["first"], t["last"]
    except (KeyError, TypeError, ZeroDivisionError) as e:
        raise BadFileError(f"{manifest_path}: no usable image_axes ({e!r}); "
                           "expected the simulator's users.json") from None
    # zero_row says where zero Doppler lies (fractional row of v["rows"]); it must agree with the velocities
    zero_row = top_edge / (top_edge - bottom_edge) * v["rows"] - 0.5
    if "zero_row" in v and abs(v["zero_row"] - zero_row) > 0.01:
        raise BadFileError(f"{manifest_path}: image_axes.velocity_mps.zero_row = {v['zero_row']} disagrees with "
                           f"its top/bottom velocities {v['top']}/{v['bottom']} (zero at row {zero_row:.2f}); "
                           "expected the simulator's users.json: run `mdgen simulate` (or `dvc repro`) again")
    return velocity_axis(height, top_edge, bottom_edge), np.linspace(first, last, width), manifest, "users.json"


# --------------------------------------------------------------------------------------
# Colour scale
# --------------------------------------------------------------------------------------

# matplotlib's jet with its default 256-entry lookup table, as plt.imsave would paint it
JET_LUT = np.round(colormaps["jet"](np.arange(256))[:, :3] * 255).astype(np.uint8)


def db_to_level(db: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """dB -> level in [0, 1]: the top dynamic_range_db of the array, relative to its maximum.

    Computed in db's own float type (the simulator's float32 image dB stays float32: its PNG bytes
    depend on it); anything else as float64.
    """
    db = np.asarray(db)
    if not np.issubdtype(db.dtype, np.floating):
        db = db.astype(np.float64)
    return np.clip((db - db.max()) / dynamic_range_db + 1.0, 0.0, 1.0)


def level_to_rgb(level: np.ndarray) -> np.ndarray:
    """Paint levels in [0, 1] with JET_LUT: uint8 [..., 3]."""
    index = np.minimum((np.asarray(level) * 256).astype(int), 255)  # matplotlib's float -> LUT index rule
    return JET_LUT[index]


@functools.lru_cache(maxsize=1)
def _jet_tree(n: int = 2048) -> cKDTree:
    # the continuous piecewise-linear jet (matplotlib's segment data), finely sampled
    return cKDTree(colormaps["jet"].resampled(n)(np.arange(n))[:, :3] * 255.0)


@functools.lru_cache(maxsize=1)
def _exact_colours() -> tuple[np.ndarray, np.ndarray]:
    """Sorted 24-bit codes of the colours a 256-entry jet image can hold, and their levels."""
    lut = JET_LUT.astype(np.int64)
    codes, first = np.unique((lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2], return_index=True)
    tree = _jet_tree()
    _, idx = tree.query(lut[first].astype(np.float64))
    return codes, idx / (tree.n - 1)


def jet_to_level(rgb: np.ndarray, return_distance: bool = False):
    """Invert the jet colormap: uint8 RGB [H, W, 3] -> level [H, W] in [0, 1] (nearest jet colour).

    Off-colour pixels (JPEG, generated images) take the level of the nearest colour on the
    jet curve; `return_distance` also returns that RGB distance (0-441) per pixel. Pixels that
    are exactly one of the 256 colours of matplotlib's jet table (our own PNGs) are looked up
    directly, the rest through a k-d tree.
    """
    rgb = np.asarray(rgb)
    assert rgb.ndim == 3 and rgb.shape[2] >= 3, f"expected an RGB image [H, W, 3], got shape {rgb.shape}"
    flat = rgb[..., :3].reshape(-1, 3)
    codes, levels = _exact_colours()
    code = (flat[:, 0].astype(np.int64) << 16) | (flat[:, 1].astype(np.int64) << 8) | flat[:, 2]
    pos = np.minimum(np.searchsorted(codes, code), codes.size - 1)
    exact = codes[pos] == code
    level = np.where(exact, levels[pos], 0.0)
    dist = np.zeros(code.size)
    if return_distance or not exact.all():
        tree = _jet_tree()
        todo = ~exact if not return_distance else np.ones_like(exact)
        d, idx = tree.query(flat[todo].astype(np.float64))
        level[todo] = idx / (tree.n - 1)
        dist[todo] = d
    level = level.reshape(rgb.shape[:2]).astype(np.float32)
    if return_distance:
        return level, dist.reshape(rgb.shape[:2]).astype(np.float32)
    return level


# The textbook jet, clip(1.5 - |4x - c|, 0, 1) for red, green and blue (c = 3, 2, 1), at 256 points:
# the table the texture card's real-data reference figures were computed against. It is not
# matplotlib's jet (whose segment data put the ramps elsewhere): the two differ by up to 33 of 255
# in a channel, and for 183 of JET_LUT's 256 entries the nearest entry here has another index, so
# the texture card keeps this table to stay comparable with the reference.
_X = np.linspace(0.0, 1.0, 256)
TEXTBOOK_JET = np.stack([np.clip(1.5 - np.abs(4 * _X - c), 0, 1) for c in (3, 2, 1)], 1) * 255.0


def textbook_jet_to_level(rgb: np.ndarray) -> np.ndarray:
    """Nearest TEXTBOOK_JET index of each pixel (float RGB [..., 3]), in [0, 1]: the texture card's level.

    Computed as the reference scripts do (the sum of squared differences to every entry, the first of equal
    ones), once per distinct colour: an image holds a few thousand, so this is exact and fast.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    flat = rgb.reshape(-1, 3)
    if np.all((flat >= 0) & (flat <= 255) & (flat == np.round(flat))):
        # 8-bit colours (every image file): distinct 24-bit codes, a 1-D unique many times faster than rows'
        code = flat.astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
        codes, inverse = np.unique(code, return_inverse=True)
        colours = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], 1).astype(np.float64)
    else:
        colours, inverse = np.unique(flat, axis=0, return_inverse=True)
    d = ((colours[:, None, :] - TEXTBOOK_JET[None]) ** 2).sum(-1)
    return (d.argmin(-1) / 255.0)[inverse.reshape(-1)].reshape(rgb.shape[:-1])
