"""Pictures of the eligibility step: the embedding by cluster and by age, and condition prevalence."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def embedding_by_cluster(embedding: np.ndarray, cluster: np.ndarray, common: set[int], path: Path) -> None:
    """2D view of the embedding [n, >=2]: common clusters in colour, rare clusters in red, noise grey."""
    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    noise = cluster < 0
    ax.scatter(*embedding[noise, :2].T, s=3, c="lightgrey", label="HDBSCAN noise (ineligible)")
    # Common clusters take tab10 without its red and grey, which mean rare and noise here.
    palette = [plt.get_cmap("tab10")(i) for i in (0, 2, 4, 9, 8, 5, 1, 6)]
    shown_common = 0
    for label in sorted(set(cluster[~noise].tolist())):
        members = cluster == label
        rare = label not in common
        colour = "red" if rare else [palette[shown_common % len(palette)]]
        shown_common += not rare
        ax.scatter(*embedding[members, :2].T, s=6 if rare else 3, c=colour,
                   marker="x" if rare else "o",
                   label=f"cluster {label} ({'rare' if rare else 'common'}, n={members.sum()})")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title("Pathology profiles: UMAP of Canberra distances, HDBSCAN clusters")
    if len(set(cluster.tolist())) <= 16:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def embedding_by_age(embedding: np.ndarray, ages: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    points = ax.scatter(*embedding[:, :2].T, s=3, c=ages, cmap="viridis")
    fig.colorbar(points, ax=ax, label="age, years")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title("Pathology profiles coloured by age")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prevalence_heatmap(prevalence: pd.DataFrame, path: Path) -> None:
    """prevalence: rows = clusters (index labels), columns = conditions, values in [0, 1]."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * prevalence.shape[1], 1.2 + 0.35 * prevalence.shape[0]),
                           constrained_layout=True)
    image = ax.imshow(prevalence.to_numpy(), vmin=0, vmax=1, cmap="magma", aspect="auto")
    ax.set_xticks(range(prevalence.shape[1]), prevalence.columns, rotation=45, ha="right")
    ax.set_yticks(range(prevalence.shape[0]), prevalence.index)
    for (row, column), value in np.ndenumerate(prevalence.to_numpy()):
        ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="share of cases with the condition at any level")
    ax.set_title("Condition prevalence per cluster")
    fig.savefig(path, dpi=110)
    plt.close(fig)
