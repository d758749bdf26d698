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


def grouped_bars(path: str | Path, groups: list[str], series: dict[str, list[float]], ylabel: str,
                 title: str = "", ylim: tuple[float, float] | None = (0.0, 1.0)) -> None:
    """One cluster of bars per group (e.g. user), one bar per series (e.g. real val / generated)."""
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(groups) + 2), 3.2))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(np.asarray(values, float)), width, label=name)
    ax.set_xticks(x, groups, rotation=45 if len(groups) > 10 else 0, fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def confusion_heatmap(path: str | Path, counts: np.ndarray, labels: list[str], title: str = "",
                      xlabel: str = "predicted", ylabel: str = "actual") -> None:
    """Row-normalised confusion matrix, with the counts written in the cells."""
    counts = np.asarray(counts)
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * n, 1.2 + 0.45 * n))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


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
