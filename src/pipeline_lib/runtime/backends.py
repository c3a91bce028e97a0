"""One device's numerics and speed settings, chosen in one place from params and recorded with every checkpoint.

PyTorch's defaults are a mix made for speed or for safety by different people at different times (cuDNN
may use TF32 while matmuls may not; cudnn.benchmark is off). Here every flag is set on purpose from
`runtime.*`, and the choice travels with the weights (`record`), so a number can be traced to the precision
that produced it:

- `runtime.amp`: bfloat16 autocast of the training step on CUDA. Every family trains through the one trainer,
  so every family allows it; sampling (generation) stays float32, where long chains (diffusion, iterative
  decoding) would accumulate bf16 error.
- `runtime.channels_last`: NHWC weights for the convolutional families (the diffusion U-Net, the VQ
  tokenizer), which cuDNN runs faster with tensor cores; the ViT families gain nothing and are left alone.
- `runtime.tf32`: TF32 for float32 matmuls and convolutions (A100 and later), float32_matmul_precision "high".
- `runtime.cudnn_benchmark`: let cuDNN time its algorithms for each input shape (faster, not bitwise
  repeatable); off, cuDNN is made deterministic.

On the CPU none of this applies and nothing is touched, so CPU results stay bitwise what they were; the
record says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import distributed, kernels

#: runtime keys this module reads, with the defaults that keep CPU results (and fp32 CUDA numerics) exact
DEFAULTS = {"amp": False, "channels_last": False, "tf32": False, "cudnn_benchmark": False}


@dataclass(frozen=True)
class Settings:
    """What is in force for this process (after the CPU/CUDA decision), not merely what params asked."""

    device: torch.device
    amp: bool
    channels_last: bool
    tf32: bool
    cudnn_benchmark: bool

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def configure(device: torch.device, amp: bool = False, channels_last: bool = False, tf32: bool = False,
              cudnn_benchmark: bool = False) -> Settings:
    """Apply the requested numerics (`runtime.*` in params, DEFAULTS when unset) to torch's backend flags for
    `device` and return what is in force.

    Idempotent; on a CPU device it sets nothing (the flags it would set do not act on CPU kernels, except
    float32_matmul_precision, which may let oneDNN use bf16 and so is left at its default)."""
    cuda = device.type == "cuda"
    settings = Settings(device, amp=bool(amp) and cuda, channels_last=bool(channels_last) and cuda,
                        tf32=bool(tf32) and cuda, cudnn_benchmark=bool(cudnn_benchmark) and cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
        torch.set_float32_matmul_precision("high" if settings.tf32 else "highest")
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        torch.backends.cudnn.deterministic = not settings.cudnn_benchmark
    return settings


def prepare(module: nn.Module, settings: Settings, convolutional: bool) -> nn.Module:
    """`module` in the memory format that suits it: channels-last for convolutional modules when asked."""
    if settings.channels_last and convolutional:
        return module.to(memory_format=torch.channels_last)
    return module


def record(settings: Settings) -> dict[str, Any]:
    """The `runtime` block of a checkpoint's sidecar: device, library versions, precision and backend flags."""
    out: dict[str, Any] = {
        "device": str(settings.device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if settings.cuda else None,
        "cudnn": torch.backends.cudnn.version() if settings.cuda else None,
        "amp_dtype": "bfloat16" if settings.amp else None,
        "channels_last": settings.channels_last,
        "world_size": distributed.world()[1],
    }
    if settings.cuda:
        out.update(device_name=torch.cuda.get_device_name(settings.device),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                   float32_matmul_precision=torch.get_float32_matmul_precision(),
                   cudnn_benchmark=torch.backends.cudnn.benchmark,
                   cudnn_deterministic=torch.backends.cudnn.deterministic)
    else:
        out.update(cpu_threads=torch.get_num_threads(), kernels=kernels.in_force(),
                   note="CPU: amp, channels_last, tf32 and cudnn_benchmark do not apply (float32 throughout)")
    return out
