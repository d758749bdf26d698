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

Every figure is [mean, std] over the images. `card` draws the same subset as the shared reference
script (sorted paths, `numpy.random.default_rng(seed).choice`); the figures agree with it to 1e-3
(a pixel equidistant from two table entries may take the other one here).
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


def _period(column_mean: np.ndarray) -> float:
    x = column_mean - column_mean.mean()
    ac = np.correlate(x, x, "full")[len(x) - 1:]
    return float(20 + np.argmax(ac[20:201]))


def figures(path: str | Path) -> dict:
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # `split` decodes every image: only a file changed since
        raise DataError(f"cannot read image {path} ({e}): run `mdgen split` (or `dvc repro`) again, "
                        "which checks every image of the data folder") from e
    a = np.asarray(rgb.resize((256, 256), Image.BILINEAR)).astype(np.float64)
    lv = textbook_jet_to_level(a[::2, ::2])
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
    }


def card(files: list, n: int = 400, seed: int = 0) -> dict:
    """{"images": k, figure: [mean, std], ...} over up to n of `files`, drawn with `seed`."""
    files = sorted(str(f) for f in files)
    if not files:
        raise ValueError("texture card: no images given")
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))]
    rows = [figures(f) for f in chosen]
    out: dict = {"images": len(chosen)}
    for k in FIGURES:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        out[k] = [np.round(v.mean(0), 4).tolist(), np.round(v.std(0), 4).tolist()]
    return out


def distances(mine: dict, reference: dict) -> dict:
    """|mean - reference mean| / reference std per figure (a list for row_profile)."""
    out = {}
    for k in FIGURES:
        m, s = (np.asarray(x, dtype=np.float64) for x in reference[k])
        z = np.abs(np.asarray(mine[k][0], dtype=np.float64) - m) / np.maximum(s, 1e-9)
        out[k] = np.round(z, 2).tolist()
    return out


def read_reference(path: str | Path) -> dict:
    ref = read_json(path)
    missing = [k for k in FIGURES if k not in ref]
    if missing:
        raise BadFileError(f"{path}: not a texture card, missing {missing}; expected the keys {list(FIGURES)}")
    return ref
