"""CPU kernels pinned before torch loads, so a stage's bytes depend on params, code and threads, not on the
x86-64 machine that ran it.

Three libraries pick their kernels at run time from the CPU they find: ATen's vectorised ops (DEFAULT, AVX2
or AVX-512 builds of each kernel), MKL's BLAS (a code path per instruction set) and oneDNN's convolutions (a
JIT per ISA). Each choice rounds differently, so the same training on an AVX-512 and an AVX2 machine gives
different weights, and after a few epochs different scores. Capping all three at AVX2, which every x86-64
server of the last decade has, makes them choose alike everywhere:

- `ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`, `MKL_ENABLE_INSTRUCTIONS=AVX2`: the ISA caps;
- `MKL_CBWR=AVX2`: MKL's conditional numerical reproducibility, the AVX2 code path on any CPU that has it.

A cap the environment already sets lower (a machine without AVX2, or a test simulating one) is kept. The
caps are read when each library initialises, so `pin` runs when `pipeline_lib` is imported, before torch.
`PIPELINE_CPU_KERNELS=native` leaves every library to choose (faster on AVX-512; numbers then belong to
the machine). Every checkpoint records what was in force (`in_force`, under `meta.runtime.kernels`).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from typing import Any, MutableMapping

SWITCH = "PIPELINE_CPU_KERNELS"
#: environment variable -> (the pinned value, the values it may keep, lowest first)
CAPS = {
    "ATEN_CPU_CAPABILITY": ("avx2", ("default", "avx2")),
    "ONEDNN_MAX_CPU_ISA": ("AVX2", ("SSE41", "AVX", "AVX2")),
    "MKL_ENABLE_INSTRUCTIONS": ("AVX2", ("SSE4_2", "AVX", "AVX2")),
    "MKL_CBWR": ("AVX2", ("COMPATIBLE", "SSE2", "SSE3", "SSSE3", "SSE4_1", "SSE4_2", "AVX", "AVX2")),
}


def pin(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Cap each library at AVX2 in `environ` (keeping a lower cap already set); the values now in force. A
    no-op on other machines than x86-64 and with PIPELINE_CPU_KERNELS=native."""
    if environ.get(SWITCH, "pinned") == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    out = {}
    for name, (value, lower) in CAPS.items():
        current = environ.get(name, "")
        if current.split(",")[0].upper() not in {v.upper() for v in lower}:
            environ[name] = value
        out[name] = environ[name]
    return out


def in_force() -> dict[str, Any]:
    """What chose this process's CPU kernels: the caps, ATen's capability in use, the CPU and its ISA."""
    import torch

    flags = _cpu_flags()
    return {
        "mode": os.environ.get(SWITCH, "pinned"),
        "caps": {name: os.environ.get(name) for name in CAPS},
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "set_before_torch_import": _BEFORE_TORCH,
        "cpu": _cpu_model(),
        "isa": sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "fma") if f in flags),
    }


def fingerprint() -> dict[str, Any]:
    """The machine beside a run's results: the kernels in force (`in_force`), the thread count and the
    versions of the libraries that compute. `numerics` is the part that decides the bytes: two runs whose
    `numerics` agree give the same outputs from the same params and code."""
    import numpy
    import torch

    kernels = in_force()
    versions = {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
                "mkl": _library_version("Math Kernel Library Version") if torch.backends.mkl.is_available() else None,
                "onednn": _library_version("MKL-DNN")}
    numerics = {"mode": kernels["mode"], "caps": kernels["caps"], "aten_capability": kernels["aten_capability"],
                "threads": torch.get_num_threads(), **versions}
    if kernels["mode"] == "native":  # the machine's own kernels: its ISA decides the bytes too
        numerics["isa"] = kernels["isa"]
    return {"numerics": numerics, "cpu": kernels["cpu"], "isa": kernels["isa"], "machine": platform.machine()}


def _library_version(name: str) -> str | None:
    """A library's version as torch's build configuration states it (`Intel(R) MKL-DNN v3.12.0`)."""
    import re

    import torch

    for line in torch.__config__.show().splitlines():
        if name in line:
            found = re.search(r"v?(\d+\.\d+(?:\.\d+)?)", line.split(name, 1)[1])
            return found.group(1) if found else line.strip()
    return None


@functools.lru_cache(maxsize=1)
def _cpu_info() -> str:
    """/proc/cpuinfo, read once per process (the model name and the flags both come from it)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _cpu_info().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    for line in _cpu_info().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


_BEFORE_TORCH = "torch" not in sys.modules  # the caps are read when each library first computes
