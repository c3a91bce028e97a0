"""Linear probe on the frozen encoder: does `encode` still separate the forget classes?

The features are exactly what the methods match (`I2IModel.encode` on the task's partial input). A
regularised multinomial logistic regression (scikit-learn) is fitted on training images of every class and
scored on test images; a class the encoder no longer represents has a low recall and an AUROC near 0.5. A
retrained model is not at zero either (clothing classes are separable from almost any features), so the
figure is read against the retrain model's, never against chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def sketch(features: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Signed feature hashing to `dim` columns (each input column added, with a random sign, to one random
    output column; fixed by `seed`): linear, memory O(D), and close to distance-preserving. A U-Net's
    flattened encoder features run to ~10^5 columns; the probe sees a fixed linear map of them."""
    d = features.shape[1]
    if d <= dim:
        return features
    g = torch.Generator().manual_seed(seed)
    bucket = torch.randint(0, dim, (d,), generator=g)
    sign = torch.randint(0, 2, (d,), generator=g).float() * 2 - 1
    out = torch.zeros(features.shape[0], dim)
    return out.index_add_(1, bucket, features * sign)


@torch.no_grad()
def encoder_features(net, x: torch.Tensor, mask: torch.Tensor, batch_size: int, sketch_dim: int = 4096,
                     seed: int = 0) -> np.ndarray:
    """`net.encode` batch by batch (eval mode), hashed to at most `sketch_dim` columns."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    out = [sketch(net.encode(xb.to(device), mb.to(device)).float().cpu(), sketch_dim, seed)
           for xb, mb in zip(x.split(batch_size), mask.split(batch_size))]
    net.train(was_training)
    return torch.cat(out).numpy().astype(np.float64)


def fit_probe(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, forget: list[int],
              retain: list[int], C: float, max_dim: int, seed: int) -> dict[str, Any]:
    """Standardise, reduce to `max_dim` principal components when wider (fitted on train), fit, score."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()]
    dim = min(max_dim, len(train) - 1)
    if train.shape[1] > dim:
        steps.append(PCA(n_components=dim, svd_solver="randomized", random_state=seed))
    steps.append(LogisticRegression(C=C, max_iter=2000, random_state=seed))
    model = make_pipeline(*steps).fit(train, y_train)
    classes = list(model.classes_)
    proba, pred = model.predict_proba(test), model.predict(test)
    per_class = {}
    for c in sorted(set(forget) | set(retain)):
        hit = y_test == c
        auroc = float(roc_auc_score(hit, proba[:, classes.index(c)])) if 0 < hit.sum() < len(hit) else float("nan")
        per_class[int(c)] = {"recall": float((pred[hit] == c).mean()), "auroc": auroc}

    def mean(group: list[int], key: str) -> float:
        return float(np.mean([per_class[c][key] for c in group]))

    return {"forget_recall": mean(forget, "recall"), "forget_auroc": mean(forget, "auroc"),
            "retain_recall": mean(retain, "recall"), "retain_auroc": mean(retain, "auroc"),
            "accuracy": float((pred == y_test).mean()), "per_class": per_class, "feature_dim": int(train.shape[1]),
            "probe_dim": int(min(dim, train.shape[1])), "train_images": len(train), "test_images": len(test)}


def linear_probe(net, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 mask_train: torch.Tensor, mask_test: torch.Tensor, forget: list[int], retain: list[int],
                 C: float = 1.0, max_dim: int = 256, seed: int = 0, batch_size: int = 256,
                 sketch_dim: int = 4096) -> dict[str, Any]:
    """Probe `net`'s encoder on (x, mask) pairs; forget-class recall and AUROC beside the retain classes'."""
    train = encoder_features(net, x_train, mask_train, batch_size, sketch_dim, seed)
    test = encoder_features(net, x_test, mask_test, batch_size, sketch_dim, seed)
    return fit_probe(train, y_train.numpy(), test, y_test.numpy(), forget, retain, C, max_dim, seed)
