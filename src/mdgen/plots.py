"""Figures written by the stages (matplotlib, Agg backend, PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mdgen.io import atomic_path  # noqa: E402


def image_grid(path: str | Path, rows: list[list[np.ndarray]], row_labels: list[str],
               col_labels: list[str] | None = None, cell: float = 1.4) -> None:
    """Rows of uint8 RGB images with a label per row (and optionally per column)."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols, cell * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j])
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
            if col_labels and i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=7)
    fig.tight_layout(pad=0.2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
    plt.close(fig)


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
    plt.close(fig)


def errorbar_panels(path: str | Path, groups: list[str], panels: dict[str, dict[str, tuple[list, list]]]) -> None:
    """One panel per quantity; per group, mean +- std of each source (e.g. real val, generated, truth)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    x = np.arange(len(groups))
    for ax, (quantity, sources) in zip(axes[0], panels.items()):
        for i, (name, (mean, std)) in enumerate(sources.items()):
            off = (i - (len(sources) - 1) / 2) * 0.2
            ax.errorbar(x + off, np.asarray(mean, float), yerr=np.asarray(std, float), fmt="o", ms=4, capsize=2,
                        label=name)
        ax.set_xticks(x, groups, rotation=45 if len(groups) > 10 else 0, fontsize=8)
        ax.set_ylabel(quantity)
        ax.legend(fontsize=7)
    _save(fig, path)
