"""Shared plain helpers for the unit tests (no fixtures here: conftest.py belongs to someone else).

Everything uses real components: the real params.yaml, the Fashion-MNIST files of the Debian package, real
models. Data loads are cached per process so several test files can share one read of the idx files.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import http.server
import shutil
import socket
import threading
from pathlib import Path
from typing import Iterator

import torch
import yaml

from pipeline_lib.data import datasets
from pipeline_lib.params import dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_PATH = REPO_ROOT / "params.yaml"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILE_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]

#: a tiny MAE (32 px, 8x8 grid of 4 px patches) that trains in well under a second per step on a CPU
TINY_ARCH = dict(patch_size=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                 decoder_num_heads=2, mlp_ratio=2.0, norm_pix_loss=False)


@functools.lru_cache(maxsize=1)
def _raw_params() -> dict:
    return yaml.safe_load(PARAMS_PATH.read_text())


def base_params() -> dict:
    """A fresh deep copy of the real params.yaml, safe to modify."""
    return copy.deepcopy(_raw_params())


@functools.lru_cache(maxsize=2)
def _split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return datasets.load_split(DEBIAN_DIR, train=train)


def fashion(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [N, 28, 28] images, int64 [N] labels) of the real data set; cached, do not modify in place."""
    return _split(train)


def fashion_subset(n: int, train: bool = True, classes: list[int] | None = None, offset: int = 0):
    """The first n images (from `offset`) of the given classes, as (uint8 images, labels)."""
    images, labels = fashion(train)
    if classes is not None:
        keep = torch.isin(labels, torch.tensor(classes)).nonzero().flatten()
    else:
        keep = torch.arange(len(labels))
    idx = keep[offset: offset + n]
    return images[idx].clone(), labels[idx].clone()


def codec(params: dict | None = None) -> datasets.ImageCodec:
    return dataset.codec(params or base_params())


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch on `n` intra-op threads, then restore the previous count.

    The models in these tests are tiny: on a small, shared CPU one thread is much faster than several
    threads spinning against each other (and against whatever else the machine runs).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def copy_debian_files(dest: Path, names: list[str] | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names or FILE_NAMES:
        shutil.copyfile(DEBIAN_DIR / name, dest / name)
    return dest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 from a thread; yield the base URL (ending in '/')."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port_url() -> str:
    """A loopback URL nobody listens on (a port just bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def official_vit_block(prefix: str, dim: int, mlp_ratio: float, r) -> dict[str, torch.Tensor]:
    """One timm-style transformer block's official key names and shapes (qkv bias), tensors from `r(*shape)`."""
    hidden = int(dim * mlp_ratio)
    return {
        f"{prefix}.norm1.weight": r(dim), f"{prefix}.norm1.bias": r(dim),
        f"{prefix}.attn.qkv.weight": r(3 * dim, dim), f"{prefix}.attn.qkv.bias": r(3 * dim),
        f"{prefix}.attn.proj.weight": r(dim, dim), f"{prefix}.attn.proj.bias": r(dim),
        f"{prefix}.norm2.weight": r(dim), f"{prefix}.norm2.bias": r(dim),
        f"{prefix}.mlp.fc1.weight": r(hidden, dim), f"{prefix}.mlp.fc1.bias": r(hidden),
        f"{prefix}.mlp.fc2.weight": r(dim, hidden), f"{prefix}.mlp.fc2.bias": r(dim),
    }


def official_mae_state_dict(embed_dim: int = 32, depth: int = 2, decoder_embed_dim: int = 32, decoder_depth: int = 1,
                            patch_size: int = 4, grid: int = 8, in_chans: int = 1, mlp_ratio: float = 2.0,
                            seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the key names and shapes of facebookresearch/mae's MaskedAutoencoderViT.

    Written from the official model definition (timm ViT blocks with qkv bias), not from pipeline_lib.
    """
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    def block(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return official_vit_block(prefix, dim, mlp_ratio, r)

    n_tokens = grid * grid + 1
    sd = {
        "cls_token": r(1, 1, embed_dim),
        "pos_embed": r(1, n_tokens, embed_dim),
        "patch_embed.proj.weight": r(embed_dim, in_chans, patch_size, patch_size),
        "patch_embed.proj.bias": r(embed_dim),
    }
    for i in range(depth):
        sd.update(block(f"blocks.{i}", embed_dim))
    sd.update({
        "norm.weight": r(embed_dim), "norm.bias": r(embed_dim),
        "mask_token": r(1, 1, decoder_embed_dim),
        "decoder_pos_embed": r(1, n_tokens, decoder_embed_dim),
        "decoder_embed.weight": r(decoder_embed_dim, embed_dim), "decoder_embed.bias": r(decoder_embed_dim),
    })
    for i in range(decoder_depth):
        sd.update(block(f"decoder_blocks.{i}", decoder_embed_dim))
    out = patch_size * patch_size * in_chans
    sd.update({
        "decoder_norm.weight": r(decoder_embed_dim), "decoder_norm.bias": r(decoder_embed_dim),
        "decoder_pred.weight": r(out, decoder_embed_dim), "decoder_pred.bias": r(out),
    })
    return sd


def assert_state_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b), f"key sets differ: {sorted(set(a) ^ set(b))}"
    for k in a:
        assert a[k].shape == b[k].shape, f"{k}: shape {tuple(a[k].shape)} != {tuple(b[k].shape)}"
        assert torch.equal(a[k], b[k]), f"{k}: values differ"


def temp_leftovers(directory: Path) -> list[str]:
    """Names of atomic_path temporaries (hidden *.tmp siblings) left in `directory`."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def train_l2n_briefly(model, steps: int = 3, batch: int = 8, ratio: float = 0.75, optimizer: dict | None = None):
    """A few real l2n steps (trainer.fit, BalancedLoader, Fashion-MNIST) on `model`; returns
    (objective, state before, teacher state before, state after) for encoder-only checks."""
    from pipeline_lib.training import trainer
    from pipeline_lib.training.loaders import BalancedLoader, mask_sampler
    from pipeline_lib.methods import build_method

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    objective = build_method("l2n", model, None, alpha=0.25, norm="l2")
    teacher_before = {k: v.detach().clone() for k, v in objective.teacher.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    retain, _ = fashion_subset(8 * batch, classes=[0, 2])
    forget, _ = fashion_subset(4 * batch, classes=[1])
    c = codec()
    loader = BalancedLoader(c.encode(retain), c.encode(forget), batch, g,
                            mask_sampler({"kind": "mixed", "size": 16, "ratio": ratio}, 32, model.mask_granularity, g))
    training = {"epochs": 1, "batch_size": batch, "max_steps": steps,
                "optimizer": optimizer or {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.05}}
    stats = trainer.fit(objective, loader, training, torch.device("cpu"))
    assert stats["steps"] == steps
    return objective, before, teacher_before, model.state_dict()


PROJECT_FILES = ["Snakefile", "dvc.yaml", "workflow", "profiles", "src", "pyproject.toml", ".gitignore", "presets",
                 ".dvc", ".dvcignore"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command in `cwd`; fail the test with its output's tail when it fails."""
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


def make_project(root: Path, preset: str = "presets/smoke.yaml", dvc_yaml: bool = True) -> Path:
    """A copy of the project with `preset` as its params.yaml (and, by default, dvc.yaml written for it)."""
    import shutil

    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO_ROOT / name
        if src.is_dir():
            # .dvc as committed: not this checkout's local cache, temporary files or local config
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "cache",
                                                                             "tmp", "config.local"))
        else:
            shutil.copy(src, root / name)
    shutil.copy(REPO_ROOT / preset, root / "params.yaml")
    if dvc_yaml:
        run(["python", "-m", "pipeline_lib", "dvc-yaml"], root)
    return root


def init_dvc_repo(root: Path) -> None:
    """A git repository of the project copy; it is a DVC repository already (.dvc is committed)."""
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "test@example.com"], root)
    run(["git", "config", "user.name", "test"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "project"], root)


def copy_run(src: Path, dst: Path) -> Path:
    """A finished run's project (outputs, logs, Snakemake's records, git and DVC state) copied with its
    timestamps, for a test that changes it."""
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def _without_timings(node):
    if isinstance(node, dict):
        return {k: _without_timings(v) for k, v in node.items() if "time" not in k and not k.endswith("per_s")}
    return [_without_timings(v) for v in node] if isinstance(node, list) else node


def same_output(a: Path, b: Path) -> bool:
    """Two runs' copies of one output are the same: byte for byte, JSON sidecars and metrics files but for
    their measured times (wall time, images/s), which no two runs share."""
    import json

    x, y = a.read_bytes(), b.read_bytes()
    if x == y:
        return True
    return a.suffix == ".json" and _without_timings(json.loads(x)) == _without_timings(json.loads(y))


class Uint8RGB(torch.utils.data.Dataset):
    """Written here, independent of pipeline_lib: uint8 [1, H, W] images repeated to [3, H, W]."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].repeat(3, 1, 1)
