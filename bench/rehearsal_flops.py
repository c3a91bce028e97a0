"""FLOPs per image of each stage's model op, counted with torch.utils.flop_counter on one image.

Why separate from the run: a Snakemake job cannot be counted from outside, so after the rehearsal has run
the DAG, the models it produced are rebuilt here in-process and each op is pushed through FlopCounterMode
once: the unlearning step (the method's loss and its backward on one forget and one retain image, as
`BalancedLoader` pairs them), the sampling chain (`reconstruct` of one image under params' sampling
settings), the extractor's training step and forward, and every metric network a metrics job runs on one
reconstruction and its ground truth. FlopCounterMode counts matmuls, convolutions and attention (the ops
that matter for time); element-wise ops and the optimizer step are not counted.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def counted(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _image(codec, generator: torch.Generator) -> torch.Tensor:
    """One random uint8 image at the codec's size, encoded as the family sees it."""
    size = codec.image_size
    raw = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=generator)
    return codec.encode(raw)


def sampling_chain(params: dict, checkpoint: Path, task: str) -> int:
    """One image through `reconstruct` as the generate stage runs it (params' sampling settings)."""
    from pipeline_lib.data.masks import sample_mask
    from pipeline_lib.stages.common import image_codec, sampling_model

    net = sampling_model(params, str(checkpoint), torch.device("cpu"))
    codec = image_codec(params, net.family)
    g = torch.Generator().manual_seed(0)
    x = _image(codec, g)
    mask = sample_mask(params["task"][task], 1, codec.image_size, net.mask_granularity, g)
    with torch.no_grad():
        return counted(lambda: net.reconstruct(x, mask))


def unlearning_step(params: dict, original: Path, unlearned: Path) -> int:
    """The method's loss and backward on a batch of one forget and one retain image, divided by the 2
    images (`n`) the trainer counts for it; method, options and noise are those the unlearned model records."""
    from pipeline_lib.methods import build_method
    from pipeline_lib.models import load_model
    from pipeline_lib.models.base import read_meta
    from pipeline_lib.noise import targets as noise_targets
    from pipeline_lib.params import paths
    from pipeline_lib.params.grid import parse_variant
    from pipeline_lib.stages.common import image_codec
    from pipeline_lib.training.loaders import BalancedLoader, mask_sampler

    meta = read_meta(unlearned)
    family = json.loads(Path(unlearned).with_suffix(".json").read_text())["family"]
    point = parse_variant(meta["variant"])
    teacher = load_model(original, "cpu")
    student = copy.deepcopy(teacher)
    objective = build_method(meta["method"], student, teacher, alpha=point["alpha"], norm=params["unlearn"]["norm"],
                             **meta["options"])
    codec = image_codec(params, family)
    g = torch.Generator().manual_seed(0)
    size = codec.image_size
    x_r, x_f = (torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g) for _ in range(2))
    sampler = noise_targets.sampler(paths.noise_kind(meta["variant"]), meta["noise_file"], codec)
    mask_fn = mask_sampler(params["unlearn"]["mask"], size, student.mask_granularity, g)
    batch = next(iter(BalancedLoader(x_r, x_f, 1, g, mask_fn, sampler, transform=codec.encode)))
    objective.train_mode()

    def step() -> None:
        objective.loss(batch)["loss"].backward()

    return counted(step) // batch["n"]


def extractor_ops(extractor: Path, image_size: int) -> dict[str, int]:
    """The pipeline's classifier: a training step (forward, cross-entropy, backward) and a forward, one image."""
    import torch.nn.functional as F

    from pipeline_lib.evaluation.extractor import load_extractor

    net, info = load_extractor(extractor)
    x = torch.randn(1, info["in_chans"], image_size, image_size)
    y = torch.zeros(1, dtype=torch.long)
    net.train()
    train = counted(lambda: F.cross_entropy(net(x), y).backward())
    net.eval()
    with torch.no_grad():
        forward = counted(lambda: net.features(x))
    return {"train": train, "forward": forward}


def metrics_job_flops(nets: dict[str, int]) -> int:
    """A metrics job's FLOPs per scored image, as the run plan counts them: the pipeline's extractor on the
    reconstruction (the ground truth's features come from the reference stage), each standard network on the
    images it sees (`engines.flops.METRIC_PASSES`)."""
    from pipeline_lib.engines.flops import METRIC_PASSES

    standard = sum(METRIC_PASSES[kind] * flops for kind, flops in nets.items() if kind in METRIC_PASSES)
    return nets["pipeline_extractor"] + standard


def metric_networks(params: dict, root: Path, image_size: int, extractor_forward: int) -> dict[str, int]:
    """Each network a metrics job runs, on one image, as the metrics stage feeds it (each resizes to its own
    input). A job's cost per image weighs each by the images it sees (`metrics_job_flops`)."""
    from pipeline_lib.evaluation import metric_weights
    from pipeline_lib.evaluation import standard_extractors as std

    out = {"pipeline_extractor": extractor_forward}
    x = torch.randint(0, 256, (1, 3, image_size, image_size), dtype=torch.uint8)
    metrics = params.get("metrics", {})
    if metrics.get("inception"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = root / metric_weights.resolve("inception", metrics["inception"])["file"]
        net = FeatureExtractorInceptionV3(std.INCEPTION_NAME, std.INCEPTION_FEATURES,
                                          feature_extractor_weights_path=str(path)).eval()
        with torch.no_grad():
            out["inception"] = counted(lambda: net(x))
    if metrics.get("clip"):  # on the meta device: on real CPU tensors, nn.MultiheadAttention's fused fast path
        # hides its projections (a third of ViT-H's FLOPs) from the counter
        from pipeline_lib.engines.flops import metric_network_flops

        out["clip"] = metric_network_flops("clip", metrics["clip"]["arch"])
    if metrics.get("places"):
        from torchvision.models import resnet50

        net = resnet50(num_classes=std.PLACES_CLASSES).eval()
        with torch.no_grad():
            out["places"] = counted(lambda: net(torch.randn(1, 3, std.PLACES_SIZE, std.PLACES_SIZE)))
    return out


def per_family(params: dict, root: Path, dataset: str) -> dict[str, Any]:
    """{"extractor": {train, forward}, "metric_networks": {...}, "families": {<family>: {"generate", "unlearn",
    "metrics"}}}: everything the rehearsal's table needs, each counted once."""
    models = root / "data" / dataset / "models"
    ext = extractor_ops(root / "data" / dataset / "extractor" / "classifier.safetensors", params["data"]["image_size"])
    result: dict[str, Any] = {"extractor": ext, "families": {}}
    task = params["tasks"][0]
    # every metric network resizes to its own input (the pipeline's extractor to data.image_size): one count
    nets = metric_networks(params, root, params["data"]["image_size"], ext["forward"])
    result["metric_networks"] = nets
    for family in params["models"]:
        original = models / family / "original" / "base" / "model.safetensors"
        unlearned = sorted(p for p in (models / family).rglob("model.safetensors") if p != original
                           and "retrain" not in p.parts)
        result["families"][family] = {
            "generate": sampling_chain(params, original, task),
            "unlearn": unlearning_step(params, original, unlearned[0]) if unlearned else None,
            "metrics": metrics_job_flops(nets),
        }
    return result
