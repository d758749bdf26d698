"""Simulated spectrograms of the same persons before and after a simulator change, on their own velocity axes.

    python experiments/geometry_picture.py OLD_DIR NEW_DIR [--out docs/images/simulator-geometry.png]

OLD_DIR and NEW_DIR are `mdgen simulate` folders (their users.json records each image axis); the first image
of persons 1-4 of each is drawn in a row, the velocity axis labelled in m/s with zero Doppler marked, so the
walker's side of zero and the limbs' direction can be compared at a glance.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from mdgen.spectrogram import image_axes


def draw(folders: dict[str, Path], out: Path, persons=(1, 2, 3, 4)) -> None:
    fig, axes = plt.subplots(len(folders), len(persons), figsize=(3.0 * len(persons), 3.2 * len(folders)),
                             squeeze=False, constrained_layout=True)
    for r, (title, folder) in enumerate(folders.items()):
        for c, n in enumerate(persons):
            ax = axes[r, c]
            image = np.asarray(Image.open(folder / f"ID_{n}" / "1.png").convert("RGB"))
            v, t, _, _ = image_axes(folder, *image.shape[:2])  # row-centre velocities from its users.json
            half = (v[0] - v[1]) / 2
            ax.imshow(image, aspect="auto", extent=(t[0], t[-1], v[-1] - half, v[0] + half))
            ax.axhline(0.0, color="white", lw=0.8, ls="--")
            ax.set_title(f"{title}: ID_{n}", fontsize=9)
            ax.set_xlabel("time (s)", fontsize=8)
            if c == 0:
                ax.set_ylabel("Doppler velocity (m/s, + towards the radar)", fontsize=8)
            ax.tick_params(labelsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/images/simulator-geometry.png"))
    a = ap.parse_args()
    draw({"previous simulator": a.old, "this simulator": a.new}, a.out)
