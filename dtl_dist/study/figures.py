"""Figures of a study (matplotlib, Agg): what people would rather look at than read."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from dtl_dist.library.atomic import atomic_path
from dtl_dist.metrics import evaluate


FIGURE_LOCK = threading.Lock()
"""Held while a figure is drawn: a study's stages run in threads and matplotlib's text layout (mathtext tick
labels of log axes) is not thread-safe."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def observed_vs_estimated(path: Path, observed, predictions: dict, *, title: str, highlight: str | None = None,
                          unit: str = "SOC (%)") -> None:
    """One panel per model: estimated against observed with the 1:1 line, RMSE and Lin's CCC (paper Fig. 4b);
    the ``highlight`` model's panel is framed."""
    plt = _pyplot()
    observed = np.asarray(observed, dtype=float)
    names = list(predictions)
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.8 * rows), dpi=100, squeeze=False)
    values = np.concatenate([observed] + [np.asarray(p, dtype=float) for p in predictions.values()])
    lo, hi = np.nanmin(values), np.nanmax(values)
    pad = 0.05 * (hi - lo)
    for ax, name in zip(axes.flat, names):
        estimated = np.asarray(predictions[name], dtype=float)
        m = evaluate(observed, estimated)
        ax.scatter(observed, estimated, s=9, alpha=0.7)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(f"{name}\nRMSE {m['rmse']:.2f}  CCC {m['lins_ccc']:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        if name == highlight:
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(2)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(f"observed {unit}", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"estimated {unit}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
