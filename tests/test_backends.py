"""Backend settings (`pipeline_lib.runtime.backends`): chosen from params on CUDA, no effect at all on the CPU (a training
step is bitwise the same with and without them), and recorded in what the stages write."""

from __future__ import annotations

import contextlib

import pytest
import torch

from pipeline_lib.params.runtime import numerics
from pipeline_lib.runtime import backends
from pipeline_lib.training.loaders import ImageLoader, mask_sampler
from pipeline_lib.models import build_model
from pipeline_lib.models.base import FamilyObjective
from pipeline_lib.runtime.devices import seed_everything
from pipeline_lib.training.trainer import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL_ON = {"device": "cpu", "amp": True, "channels_last": True, "tf32": True, "cudnn_benchmark": True}
#: a two-level U-Net: the convolutional family, so channels-last would apply if the CPU took it
TINY_UNET = dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, train_timesteps=50,
                 sample_steps=2)


def _flags() -> tuple:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic, torch.get_float32_matmul_precision())


@contextlib.contextmanager
def _kept_flags():
    before = _flags()
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
         torch.backends.cudnn.deterministic) = before[:4]
        torch.set_float32_matmul_precision(before[4])


def _train(runtime: dict | None) -> dict[str, torch.Tensor]:
    """Two Adam steps of a tiny diffusion U-Net, through `backends` when `runtime` is given."""
    g = seed_everything(0)
    net = build_model("diffusion", TINY_UNET, 16, in_chans=1)
    amp = False
    if runtime is not None:
        settings = backends.configure(torch.device("cpu"), **numerics({"runtime": runtime}))
        net, amp = backends.prepare(net, settings, net.convolutional), runtime["amp"]
    data = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    loader = ImageLoader(data, 4, g, mask_fn=mask_sampler({"kind": "center", "size": 8}, 16, 1, g))
    fit(FamilyObjective(net), loader, {"epochs": 1, "batch_size": 4, "optimizer": {"name": "adam", "lr": 1e-3}},
        torch.device("cpu"), amp=amp, desc="tiny")
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_settings_on_the_cpu_leave_training_bitwise_unchanged():
    with _kept_flags():
        before = _flags()
        plain = _train(None)
        configured = _train(ALL_ON)
        assert _flags() == before  # nothing was set for a CPU device
    for k, v in plain.items():
        assert torch.equal(v, configured[k]), k
        assert configured[k].is_contiguous(), k  # no channels-last weights on the CPU


def test_the_cpu_record_says_what_did_not_apply():
    settings = backends.configure(torch.device("cpu"), **numerics({"runtime": ALL_ON}))
    assert (settings.amp, settings.channels_last, settings.tf32, settings.cudnn_benchmark) == (False,) * 4
    block = backends.record(settings)
    assert block["device"] == "cpu" and block["torch"] == torch.__version__
    assert block["amp_dtype"] is None and block["channels_last"] is False and block["world_size"] == 1
    assert block["cuda"] is None and block["cudnn"] is None and "do not apply" in block["note"]


def test_cuda_flags_follow_params_and_default_to_full_float32():
    """Setting the flags needs no device; the defaults turn off cuDNN's own TF32 default (float32 on purpose)."""
    cuda = torch.device("cuda")
    with _kept_flags():
        settings = backends.configure(cuda, **numerics({"runtime": {"device": "cuda", "amp": False}}))
        assert not settings.amp and not settings.channels_last
        assert _flags() == (False, False, False, True, "highest")
        settings = backends.configure(cuda, **numerics({"runtime": {**ALL_ON, "device": "cuda"}}))
        assert settings.amp and settings.channels_last and settings.tf32
        assert _flags() == (True, True, True, False, "high")
        unet = backends.prepare(build_model("diffusion", TINY_UNET, 16, in_chans=1), settings, True)
        conv = next(p for p in unet.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last)
