"""The metric feature extractor: a small classifier trained by the pipeline, registered with torch-fidelity.

Inception-v3 features mean little on 32 px grey clothing, and its weights cannot be fetched here, so FID,
IS and the embedding cosine use this network: `feat` (penultimate layer) for FID and cosine, `logits_unbiased`
for IS. Registered under EXTRACTOR_NAME; torch-fidelity passes uint8 [B, 3, H, W] images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_fidelity
from safetensors.torch import load_file, save_file
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ..runtime.atomic import atomic_path, write_json
from ..runtime.errors import DataError

EXTRACTOR_NAME = "i2i-unlearning-classifier"


class Classifier(nn.Module):
    def __init__(self, in_chans: int = 1, num_classes: int = 10, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.feature = nn.Linear(64 * 16, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding: pre-activation, so cosines between embeddings use their sign too."""
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.features(x)))


class ClassifierObjective:
    def __init__(self, net: Classifier):
        self.net = net

    def trainable_parameters(self):
        return list(self.net.parameters())

    def train_mode(self) -> None:
        self.net.train()

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(self.net(batch["x"]), batch["y"])}


def save_extractor(net: Classifier, path: str | Path, mean: float, std: float, meta: dict) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    write_json(path.with_suffix(".json"), {"feature_dim": net.feature.out_features, "num_classes": net.head.out_features,
                                          "in_chans": net.body[0].in_channels,
                                          "mean": mean, "std": std, "meta": meta})


def load_extractor(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    path = Path(path)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise DataError(f"feature extractor {path} (or its .json) is missing: run the extractor stage")
    info = json.loads(path.with_suffix(".json").read_text())
    net = Classifier(info["in_chans"], info["num_classes"], info["feature_dim"])
    net.load_state_dict(load_file(str(path)))
    return net.eval(), info


class FidelityExtractor(FeatureExtractorBase):
    """torch-fidelity adapter: uint8 RGB in, the classifier's features and logits out."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise DataError("the pipeline extractor needs feature_extractor_weights_path")
        self.net, info = load_extractor(feature_extractor_weights_path)
        self.mean, self.std, self.in_chans = info["mean"], info["std"], info["in_chans"]

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits_unbiased", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        x = x[:, : self.in_chans].float().div(255.0)
        x = (x - self.mean) / self.std
        feat = self.net.features(x)
        logits = self.net.head(F.relu(feat))
        out = {"feat": feat, "logits_unbiased": logits, "logits": logits}
        return tuple(out[name] for name in self.features_list)


def register() -> None:
    """Make the extractor known to torch-fidelity under EXTRACTOR_NAME (idempotent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(EXTRACTOR_NAME, FidelityExtractor)
