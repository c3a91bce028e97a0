"""t-SNE of embeddings (paper 1, Fig. 4): do reconstructions of the forget set still sit with its ground truth?

All groups (e.g. forget/retain ground truth and reconstructions) are embedded in one t-SNE run so their
positions are comparable; PCA initialisation and a fixed random_state make the map the same on every run.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

from ..runtime.atomic import atomic_path


def embed_tsne(groups: dict[str, torch.Tensor], seed: int, perplexity: float = 30.0) -> pd.DataFrame:
    """2-D t-SNE of every group's [N, ...] embeddings: columns x, y and group (in the dict's order)."""
    if not groups:
        raise ValueError("embed_tsne needs at least one group of embeddings")
    arrays, names, dim = [], [], None
    for name, emb in groups.items():
        if not isinstance(emb, torch.Tensor) or emb.dim() < 2 or len(emb) == 0:
            raise ValueError(f"group '{name}' must be a non-empty [N, ...] tensor, got "
                             f"{tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__}")
        flat = emb.detach().cpu().double().flatten(1).numpy()
        if dim is not None and flat.shape[1] != dim:
            raise ValueError(f"group '{name}' has {flat.shape[1]} features per sample, the groups before it {dim}")
        if not np.isfinite(flat).all():
            raise ValueError(f"group '{name}' holds non-finite values")
        dim = flat.shape[1]
        arrays.append(flat)
        names += [name] * len(flat)
    x = np.concatenate(arrays)
    if not 0 < perplexity < len(x):
        raise ValueError(f"t-SNE perplexity {perplexity} must be positive and below the {len(x)} samples")
    from sklearn.manifold import TSNE

    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(x)
    return pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1],
                         "group": pd.Categorical(names, categories=list(groups))})


def plot_tsne(df: pd.DataFrame, out_png: str | os.PathLike, title: str) -> None:
    """Scatter of an embed_tsne frame, one colour per group, written atomically."""
    missing = {"x", "y", "group"} - set(df.columns)
    if missing:
        raise ValueError(f"plot_tsne needs columns x, y and group; missing {', '.join(sorted(missing))}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        sns.scatterplot(data=df, x="x", y="y", hue="group", s=12, alpha=0.8, linewidth=0, ax=ax)
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlabel(""), ax.set_ylabel("")
        ax.legend(title=None, fontsize=8, markerscale=1.5)
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
