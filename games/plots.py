"""Convergence figures in the style of COMAL's Figure 3: trajectories on the probability simplex and the
exploitability of every iterate on a log scale. matplotlib (Agg backend) is imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from games.dynamics import Trajectory

# Vertices of the 2-simplex in the plane: action 0 bottom-left, 1 bottom-right, 2 top.
_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_plane(policies: np.ndarray) -> np.ndarray:
    """Barycentric → Cartesian coordinates for 3-action policies."""
    return np.asarray(policies) @ _CORNERS


def plot_simplex(
    trajs: list[Trajectory],
    path: Path,
    nash: np.ndarray | None = None,
    labels: tuple[str, ...] = ("a", "b", "c"),
) -> Path:
    """Trajectories of 3-action policies on the simplex; for other sizes, each action's probability over
    time, one panel per algorithm."""
    plt = _pyplot()
    n = trajs[0].policies.shape[1]
    if n == 3:
        # One small simplex per algorithm: overlaid, the cycling MWU orbit hides everything else.
        cols = min(4, len(trajs))
        rows = int(np.ceil(len(trajs) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
        for ax, tr in zip(axes.flat, trajs):
            ax.plot(*np.vstack([_CORNERS, _CORNERS[:1]]).T, color="black", lw=0.8)
            for (x, y), lab in zip(_CORNERS, labels):
                ax.annotate(
                    lab,
                    (x, y),
                    textcoords="offset points",
                    xytext=(0, 5 if y > 0 else -12),
                    ha="center",
                    fontsize=8,
                )
            xy = to_plane(tr.policies)
            ax.plot(xy[:, 0], xy[:, 1], lw=0.8, color="tab:blue")
            ax.plot(*xy[0], marker="s", color="black", ms=5, label="start")
            ax.plot(*xy[-1], marker="o", color="tab:orange", ms=5, label="last iterate")
            if nash is not None:
                ax.plot(*to_plane(nash), marker="*", color="red", ms=11, label="Nash", zorder=5)
            ax.set_title(tr.name, fontsize=9)
            ax.set_aspect("equal")
            ax.axis("off")
        for ax in list(axes.flat)[len(trajs) :]:
            ax.axis("off")
        handles, names = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.suptitle(f"Policy trajectories on the simplex ({len(trajs[0].policies) - 1} iterations)")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        cols = min(4, len(trajs))
        rows = int(np.ceil(len(trajs) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, tr in zip(axes.flat, trajs):
            ax.plot(tr.policies)
            ax.set_title(tr.name, fontsize=9)
            ax.set_ylim(0, 1)
            ax.set_xlabel("iteration")
        for ax in list(axes.flat)[len(trajs) :]:
            ax.axis("off")
        axes.flat[0].legend([f"action {i}" for i in range(n)], fontsize=7)
        fig.suptitle("Action probabilities over time")
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_exploitability(trajs: list[Trajectory], path: Path, floor: float = 1e-16) -> Path:
    """max_y P(y ≻ π_t) − 1/2 against t, log scale (values at machine precision are clipped to `floor`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ("-", "--", "-.", ":")  # several rules share a limit point; dashes keep them visible
    for k, tr in enumerate(trajs):
        ax.plot(
            np.arange(len(tr.exploitability)),
            np.maximum(tr.exploitability, floor),
            lw=1.3,
            ls=styles[k % len(styles)],
            label=tr.name,
        )
    ax.set_yscale("log")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("exploitability  max_y P(y ≻ π_t) − 1/2")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Equilibrium gap")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
