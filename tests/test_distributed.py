"""Data parallelism: 2 gloo processes on the CPU follow one process's loss curve and end at its weights, and
write the same reconstructions as one process; running out of device memory names the batch-size key."""

from __future__ import annotations


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import TINY_ARCH
from pipeline_lib.params.runtime import gpus
from pipeline_lib.runtime import distributed
from pipeline_lib.runtime.errors import ResourceError
from pipeline_lib.training.loaders import ImageLoader, mask_sampler
from pipeline_lib.models import build_model
from pipeline_lib.models.base import FamilyObjective
from pipeline_lib.training.trainer import fit
import pipeline_lib.stages.common  # noqa: F401
import pipeline_lib.stages.data  # noqa: F401
import pipeline_lib.stages.generate  # noqa: F401

PER_PROCESS, STEPS = 4, 6
#: plain gradient steps: the weights then follow the gradients linearly (Adam's division by sqrt(v) turns the
#: float noise of near-zero gradients into whole lr-sized steps, hiding what this test checks)
TRAINING = {"epochs": 1, "batch_size": PER_PROCESS, "optimizer": {"name": "sgd", "lr": 0.05}}


class Recording(FamilyObjective):
    """Records each step's loss on this process's share and the share's size."""

    def __init__(self, model):
        super().__init__(model)
        self.curve = []

    def loss(self, batch):
        out = super().loss(batch)
        self.curve.append((float(out["loss"].detach()), len(batch["x"])))
        return out


def _train() -> tuple[list[tuple[float, int]], dict[str, torch.Tensor]]:
    """STEPS steps on global batches of 2 x PER_PROCESS, shared among however many processes run this."""
    torch.manual_seed(0)
    net = build_model("mae", TINY_ARCH, 32, in_chans=1)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(PER_PROCESS * 2 * STEPS, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    loader = ImageLoader(data, 2 * PER_PROCESS, g,
                         mask_fn=mask_sampler({"kind": "random", "ratio": 0.5, "patch": 4}, 32, 4, g))
    objective = Recording(net)
    fit(objective, loader, TRAINING, torch.device("cpu"), desc="ddp")
    return objective.curve, {k: v.detach().clone() for k, v in net.state_dict().items()}


def _worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.save(_train(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path, one_torch_thread):
    single_curve, single_state = _train()  # one process on the whole global batch
    assert len(single_curve) == STEPS and all(n == 2 * PER_PROCESS for _, n in single_curve)
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"out.{r}") for r in range(2)]
    curves = [p[0] for p in parts]
    assert [n for _, n in curves[0]] == [PER_PROCESS] * len(single_curve)
    combined = [(a * na + b * nb) / (na + nb) for (a, na), (b, nb) in zip(*curves)]
    assert combined == pytest.approx([loss for loss, _ in single_curve], rel=1e-4, abs=1e-5)
    worst = max(float((parts[0][1][k] - v).abs().max()) for k, v in single_state.items())
    assert worst < 1e-5, worst
    for name in single_state:
        assert torch.equal(parts[0][1][name], parts[1][1][name]), name  # the processes stay in step


def test_shard_splits_every_batch_tensor_and_leaves_the_rest():
    batch = {"x": torch.arange(5), "n": 5, "seed": 3}
    assert distributed.shard(batch) == (batch, 1.0)  # one process: untouched


def test_out_of_memory_names_the_batch_size_key(one_torch_thread):
    class Exhausting(FamilyObjective):
        def loss(self, batch):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    net = build_model("mae", TINY_ARCH, 32, in_chans=1)
    g = torch.Generator().manual_seed(0)
    loader = ImageLoader(torch.randn(8, 1, 32, 32), 4, g)
    with pytest.raises(ResourceError, match=r"lower params key 'model.mae.pretrain.batch_size' \(now 4\)"):
        fit(Exhausting(net), loader, TRAINING, torch.device("cpu"), desc="pretrain mae",
            batch_key="model.mae.pretrain.batch_size")


def test_the_cli_relaunches_under_torchrun_only_with_several_devices(monkeypatch):
    params = {"model": {"mae": {"gpus": 4}}, "runtime": {"device": "auto"}}
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    cmd = distributed.relaunch_command("unlearn", gpus(params, "mae"), "auto", ["unlearn", "--model", "mae"])
    assert cmd[1:] == ["--standalone", "--nproc_per_node=4", "-m", "pipeline_lib", "--", "unlearn", "--model", "mae"]
    assert distributed.relaunch_command("metrics", gpus(params, "mae"), "auto", []) is None
    assert distributed.relaunch_command("generate", gpus(params, "mae"), "auto", ["generate"])[-1] == "generate"
    assert distributed.relaunch_command("generate", gpus(params, None), "auto", []) is None  # no checkpoint sidecar to tell
    monkeypatch.setenv("WORLD_SIZE", "4")  # already under torchrun
    assert distributed.relaunch_command("unlearn", gpus(params, "mae"), "auto", []) is None
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine: one process
    assert distributed.relaunch_command("unlearn", gpus(params, "mae"), "auto", []) is None


GEN_FAMILIES = ("vqgan", "diffusion", "mae")


def _generation_setup(root) -> dict:
    """Params (global batches of 3: at least 3 per set, shared unevenly), splits and a random-weight model per family; the VQ
    model samples at temperature 1 from torch's global generator, the diffusion model from its seeded noise."""
    from helpers import DEBIAN_DIR, base_params
    from pipeline_lib import stages
    from pipeline_lib.params.grid import family_arch
    from pipeline_lib.params.load import validate_params
    from pipeline_lib.models import save_model

    params = base_params()
    params["splits"].update(unlearn_per_class=4, eval_per_class=4)
    params["generate"]["batch_size"] = 3
    params["model"]["diffusion"]["sampling"] = {"steps": 2}
    params["model"]["vqgan"]["sampling"] = {"steps": 4, "temperature": 1.0}
    params["task"] = {"center": {"kind": "center", "size": 16}, "outpaint": {"kind": "outpaint", "size": 16}}
    params.update(tasks=["center", "outpaint"], crossval={"inpaint": "center", "outpaint": "outpaint"})
    params = validate_params(params)
    stages.data.splits(params, str(DEBIAN_DIR), str(root / "splits.json"))
    torch.manual_seed(0)
    for family in GEN_FAMILIES:
        size = stages.common.image_codec(params, family).image_size
        save_model(build_model(family, family_arch(params, family), size, in_chans=1), root / f"{family}.safetensors")
    return params


def _generate_all(params: dict, root, out: str) -> None:
    from helpers import DEBIAN_DIR
    from pipeline_lib import stages

    for family in GEN_FAMILIES:
        stages.generate.generate(params, str(root / f"{family}.safetensors"), str(DEBIAN_DIR), str(root / "splits.json"),
                        "center", str(root / out / family))
    stages.generate.crossval(params, str(root / "vqgan.safetensors"), str(root / "vqgan.safetensors"), str(DEBIAN_DIR),
                    str(root / "splits.json"), str(root / out / "xval"))


def _generation_worker(rank: int, world: int, store: str, root: str, params: dict) -> None:
    from pathlib import Path

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        _generate_all(params, Path(root), "two")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_generate_what_one_process_generates(tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    params = _generation_setup(tmp_path)
    _generate_all(params, tmp_path, "one")
    mp.spawn(_generation_worker, args=(2, str(tmp_path / "store"), str(tmp_path), params), nprocs=2, join=True)
    for run in (*GEN_FAMILIES, "xval"):
        for which in ("forget", "retain"):
            one = load_file(str(tmp_path / "one" / run / f"{which}.safetensors"))
            two = load_file(str(tmp_path / "two" / run / f"{which}.safetensors"))
            assert len(one["recon"]) > 6  # at least three global batches of 3
            for key in one:
                assert torch.equal(one[key], two[key]), (run, which, key)
        assert sorted(p.name for p in (tmp_path / "two" / run / "png" / "forget").iterdir()) == sorted(
            p.name for p in (tmp_path / "one" / run / "png" / "forget").iterdir())


def test_skipping_a_batch_draws_what_sampling_it_would():
    """The VQ model's pipeline decoding at temperature > 0 reads torch's global generator; `skip_sampling`
    advances it by exactly what one `reconstruct` call takes, so the next batch sees the same numbers."""
    from pipeline_lib.data.masks import sample_mask

    net = build_model("vqgan", {"codebook_size": 16, "code_dim": 4, "tokenizer_dim": 8, "embed_dim": 16, "depth": 1,
                                "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
                                "steps": 5, "temperature": 1.0}, 32, in_chans=1).eval()
    x = torch.randn(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    later = sample_mask({"kind": "random", "ratio": 0.6}, 3, 32, net.mask_granularity, g)
    # many hidden tokens (every step runs), and one (decoding ends after the first step)
    for spec in ({"kind": "random", "ratio": 0.6}, {"kind": "center", "size": 4}):
        skipped = sample_mask(spec, 3, 32, net.mask_granularity, g)
        torch.manual_seed(5)
        net.reconstruct(x[0], skipped)
        after_sampling = net.reconstruct(x[1], later)
        torch.manual_seed(5)
        net.skip_sampling(skipped)
        assert torch.equal(net.reconstruct(x[1], later), after_sampling), spec


def test_generation_stages_take_their_family_from_the_checkpoint_sidecar(tmp_path):
    """generate and crossval have no --model: the CLI reads the family (and so its gpus) from --checkpoint."""
    import argparse
    import json

    from pipeline_lib.cli import _family

    (tmp_path / "model.json").write_text(json.dumps({"family": "vqgan"}))
    assert _family(argparse.Namespace(checkpoint=str(tmp_path / "model.safetensors"))) == "vqgan"
    assert _family(argparse.Namespace(checkpoint=str(tmp_path / "absent.safetensors"))) is None
    assert _family(argparse.Namespace(model="mae", checkpoint=None)) == "mae"
