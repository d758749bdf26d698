"""Texture card of jet-coloured spectrogram images: the figures the real-data reference
(`data/reference/real_texture.json`, the card of a real 77 GHz gait set of 10 persons) holds, computed the
same way, so that a simulated set (or a user's own) can be held against it and `dvc metrics diff` shows drift.

Each image is read as RGB at 256x256 (bilinear resize otherwise). "Level" is the index of the nearest
colour of a 256-entry jet table (`mdgen.spectrogram.TEXTBOOK_JET`, the reference's, not matplotlib's),
scaled to [0, 1], on every second pixel (128x128); rows run top to bottom.

  navy_share    share of pixels at level < 0.12 (the flat noise floor of real data)
  flat_h        share of horizontal neighbour pairs whose summed |RGB difference| is < 6
  lag1_h/_v     mean |RGB difference| between pixels 1 apart, along time (h) / Doppler (v)
  lag4_h/_v     the same at 4 pixels
  mean_level    mean level
  hot_share     share of pixels at level > 0.6
  peak_row      row of the largest row-mean level, as a fraction of the height
  row_profile   row-mean level in 8 bands, top to bottom
  cycle_px      dominant period, in pixels, of the column-mean level (autocorrelation peak, 20..200)

The shape card (`data/reference/real_shape.json`, the same real set's) measures where the energy sits
around the torso line, on levels at full resolution (256x256) and, for the runs, on the image resized by
nearest neighbour:

  torso_row       row of the largest row-mean level, fraction of the height
  upper_env       per column, the highest row whose level is > 0.3; the image's median over columns
  lower_env       the same, lowest row
  reach_above     torso_row - upper_env   (how far limb echoes rise above the torso line)
  reach_below     lower_env - torso_row   (how far they fall below it)
  upper_tip       per column, the highest row whose level is > 0.2; 10th percentile over columns
  lower_tip       the same, lowest row; 90th percentile
  above_share     share of the level mass (level > 0.3) above the torso row
  row_profile16   row-mean level in 16 bands, top to bottom
  run_h / run_v   mean length in pixels of runs of identical colour along time / Doppler

Every figure is [mean, std] over the images. `card` draws the same subset as the shared reference
scripts (sorted paths, `numpy.random.default_rng(seed).choice`) and computes levels as they do, so the
figures are theirs (tests/test_texture.py compares with both scripts to 1e-3).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mdgen.errors import BadFileError, DataError
from mdgen.io import read_json
from mdgen.spectrogram import textbook_jet_to_level

FIGURES = ("navy_share", "flat_h", "lag1_h", "lag1_v", "lag4_h", "lag4_v", "mean_level", "hot_share",
           "peak_row", "row_profile", "cycle_px")
SHAPE_FIGURES = ("torso_row", "upper_env", "lower_env", "reach_above", "reach_below", "upper_tip", "lower_tip",
                 "above_share", "row_profile16", "run_h", "run_v")


def _period(column_mean: np.ndarray) -> float:
    x = column_mean - column_mean.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1:]
    return float(20 + np.argmax(ac[20:201]))


def _mean_run(rgb: np.ndarray, axis: int) -> float:
    """Mean length of the runs of identical colour along `axis` (1: time, 0: Doppler): pixels per run."""
    breaks = int((~np.all(np.diff(rgb, axis=axis) == 0, axis=-1)).sum())
    lines = rgb.shape[1 - axis]  # each line along the axis starts one run
    return rgb.shape[0] * rgb.shape[1] / max(breaks + lines, 1)


def _edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column with any True: its first and last True row."""
    any_ = mask.any(0)
    first = mask.argmax(0)
    last = mask.shape[0] - 1 - mask[::-1].argmax(0)
    return first[any_], last[any_]


def shape_figures(lv: np.ndarray, raw: np.ndarray) -> dict:
    """The shape card's figures of one image: `lv` its levels at 256x256 (bilinear), `raw` nearest 256x256 RGB."""
    rows = lv.mean(1)
    torso = int(np.argmax(rows))
    n = lv.shape[0]
    hot = lv > 0.3
    up, lo = _edges(hot)
    up, lo = (float(np.median(up)), float(np.median(lo))) if up.size else (torso, torso)
    ut, lt = _edges(lv > 0.2)
    ut, lt = (float(np.percentile(ut, 10)), float(np.percentile(lt, 90))) if ut.size else (torso, torso)
    mass = lv * hot
    return {
        "torso_row": torso / n, "upper_env": up / n, "lower_env": lo / n,
        "reach_above": (torso - up) / n, "reach_below": (lo - torso) / n,
        "upper_tip": ut / n, "lower_tip": lt / n,
        "above_share": mass[:torso].sum() / max(mass.sum(), 1e-9),
        "row_profile16": rows.reshape(16, -1).mean(1),
        "run_h": _mean_run(raw, 1), "run_v": _mean_run(raw, 0),
    }


def _read_rgb(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # `split` decodes every image: only a file changed since
        raise DataError(f"cannot read image {path} ({e}): run `mdgen split` (or `dvc repro`) again, "
                        "which checks every image of the data folder") from e


def figures(path: str | Path, shape: bool = False) -> dict:
    """The texture card's figures of one image, and with `shape` the shape card's too."""
    rgb = _read_rgb(path)
    a = np.asarray(rgb.resize((256, 256), Image.BILINEAR)).astype(np.float64)
    # a level depends on its pixel alone: the texture card's every-second pixel is the shape card's grid subsampled
    full = textbook_jet_to_level(a) if shape else None
    lv = full[::2, ::2] if shape else textbook_jet_to_level(a[::2, ::2])
    dh = np.abs(np.diff(a, axis=1))
    rows = lv.mean(1)
    return {
        "navy_share": (lv < 0.12).mean(),
        "flat_h": (dh.sum(-1) < 6).mean(),
        "lag1_h": dh.mean(),
        "lag1_v": np.abs(np.diff(a, axis=0)).mean(),
        "lag4_h": np.abs(a[:, 4:] - a[:, :-4]).mean(),
        "lag4_v": np.abs(a[4:] - a[:-4]).mean(),
        "mean_level": lv.mean(),
        "hot_share": (lv > 0.6).mean(),
        "peak_row": rows.argmax() / len(rows),
        "row_profile": rows.reshape(8, -1).mean(1),
        "cycle_px": _period(lv.mean(0)) * 2,
        **(shape_figures(full, np.asarray(rgb.resize((256, 256), Image.NEAREST)).astype(np.int64)) if shape else {}),
    }


def card(files: list, n: int = 400, seed: int = 0, shape: bool = False) -> dict:
    """{"images": k, figure: [mean, std], ...} over up to n of `files`, drawn with `seed`; with `shape`,
    also {"shape": {"images": k, figure: [mean, std], ...}}, the shape card of the same images."""
    files = sorted(str(f) for f in files)
    if not files:
        raise ValueError("texture card: no images given")
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))]
    rows = [figures(f, shape) for f in chosen]
    out: dict = {"images": len(chosen), **_summary(rows, FIGURES)}
    if shape:
        out["shape"] = {"images": len(chosen), **_summary(rows, SHAPE_FIGURES)}
    return out


def _summary(rows: list[dict], names: tuple) -> dict:
    out = {}
    for k in names:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        out[k] = [np.round(v.mean(0), 4).tolist(), np.round(v.std(0), 4).tolist()]
    return out


def distances(mine: dict, reference: dict, names: tuple = FIGURES) -> dict:
    """|mean - reference mean| / reference std per figure (a list for the row profiles)."""
    out = {}
    for k in names:
        m, s = (np.asarray(x, dtype=np.float64) for x in reference[k])
        z = np.abs(np.asarray(mine[k][0], dtype=np.float64) - m) / np.maximum(s, 1e-9)
        out[k] = np.round(z, 2).tolist()
    return out


def read_reference(path: str | Path, names: tuple = FIGURES) -> dict:
    ref = read_json(path)
    missing = [k for k in names if k not in ref]
    if missing:
        kind = "texture" if names == FIGURES else "shape"
        raise BadFileError(f"{path}: not a {kind} card, missing {missing}; expected the keys {list(names)}")
    return ref
