"""The l2n loss against a hand computation, the training loop's guards and determinism, loaders, atomic writes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from helpers import TINY_ARCH, codec, fashion_subset, temp_leftovers
from pipeline_lib.training import trainer
from pipeline_lib.runtime.atomic import atomic_path, write_json
from pipeline_lib.runtime.errors import NonFiniteLossError
from pipeline_lib.noise.sampling import NoiseSampler
from pipeline_lib.training.loaders import BalancedLoader, ImageLoader, mask_sampler
from pipeline_lib.methods import build_method, distance
from pipeline_lib.models import I2IModel, build_model
from pipeline_lib.models.base import FamilyObjective
from pipeline_lib.runtime.devices import seed_everything

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CPU = torch.device("cpu")


class LinearI2I(I2IModel):
    """encode(x, mask) = flatten(x with hidden pixels zeroed) @ W; a one-parameter 'encoder'."""

    family = "linear-test"

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.unused_decoder = nn.Parameter(torch.ones(3))

    def encoder_parameters(self):
        return [self.weight]

    def encode(self, x, mask):
        return x.masked_fill(mask, 0.0).flatten(1) @ self.weight


def _hand_batch():
    # 2 samples of 1x2x2 images; the masks hide one pixel each
    x_r = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.5, -1.0], [2.0, 0.0]]]])
    x_f = torch.tensor([[[[-2.0, 1.0], [0.0, 3.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    noise = torch.tensor([[[[0.3, -0.7], [1.1, 0.2]]], [[[-0.4, 0.9], [0.0, -1.3]]]])
    mask_r = torch.tensor([[[[False, True], [False, False]]], [[[False, False], [True, False]]]])
    mask_f = torch.tensor([[[[True, False], [False, False]]], [[[False, False], [False, True]]]])
    return {"x_r": x_r, "x_f": x_f, "noise": noise, "mask_r": mask_r, "mask_f": mask_f, "n": 4}


W_TEACHER = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 2.0, 1.0]])
W_STUDENT = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [2.0, -1.0, 0.5], [0.0, 0.0, 1.0]])


def _expected_l2n(batch, alpha, norm):
    """Eq. 10 with plain torch: ||E(T(x_r)) - E0(T(x_r))|| + alpha ||E(T(x_f)) - E0(T(n))||, batch-averaged."""

    def T(x, m):
        return torch.where(m, torch.zeros_like(x), x).reshape(len(x), -1)

    d_r = T(batch["x_r"], batch["mask_r"]) @ W_STUDENT - T(batch["x_r"], batch["mask_r"]) @ W_TEACHER
    d_f = T(batch["x_f"], batch["mask_f"]) @ W_STUDENT - T(batch["noise"], batch["mask_f"]) @ W_TEACHER
    if norm == "l2":
        retain = torch.stack([torch.sqrt((row**2).sum()) for row in d_r]).mean()
        forget = torch.stack([torch.sqrt((row**2).sum()) for row in d_f]).mean()
    else:
        retain = (d_r**2).sum() / d_r.numel()
        forget = (d_f**2).sum() / d_f.numel()
    return retain, forget, retain + alpha * forget


@pytest.mark.parametrize("norm", ["l2", "mse"])
@pytest.mark.parametrize("alpha", [0.25, 2.0])
def test_l2n_loss_matches_hand_computation(norm, alpha):
    batch = _hand_batch()
    method = build_method("l2n", LinearI2I(W_STUDENT), LinearI2I(W_TEACHER), alpha=alpha, norm=norm)
    out = {k: v.detach() for k, v in method.loss(batch).items()}
    retain, forget, total = _expected_l2n(batch, alpha, norm)
    assert float(out["retain"]) == pytest.approx(float(retain), rel=1e-6)
    assert float(out["forget"]) == pytest.approx(float(forget), rel=1e-6)
    assert float(out["loss"]) == pytest.approx(float(total), rel=1e-6)


def test_l2n_single_sample_by_hand():
    """One scalar case small enough to check with arithmetic alone."""
    w_student = torch.tensor([[2.0], [0.0], [0.0], [0.0]])
    w_teacher = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    x = torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]]])
    noise = torch.tensor([[[[5.0, 0.0], [0.0, 0.0]]]])
    visible = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    batch = {"x_r": x, "x_f": x, "noise": noise, "mask_r": visible, "mask_f": visible, "n": 2}
    method = build_method("l2n", LinearI2I(w_student), LinearI2I(w_teacher), alpha=0.5, norm="l2")
    out = {k: v.detach() for k, v in method.loss(batch).items()}
    # retain: |2*3 - 1*3| = 3; forget: |2*3 - 1*5| = 1; loss = 3 + 0.5 * 1
    assert float(out["retain"]) == 3.0 and float(out["forget"]) == 1.0 and float(out["loss"]) == 3.5


def test_l2n_gradients_reach_the_student_encoder_only():
    method = build_method("l2n", LinearI2I(W_STUDENT), LinearI2I(W_TEACHER), alpha=0.25, norm="l2")
    params = method.trainable_parameters()
    assert len(params) == 1 and params[0] is method.model.weight
    assert not method.model.unused_decoder.requires_grad
    method.loss(_hand_batch())["loss"].backward()
    assert method.model.weight.grad is not None and method.model.weight.grad.abs().sum() > 0
    assert method.teacher.weight.grad is None


def test_distance_rejects_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm"):
        distance(torch.zeros(2, 3), torch.ones(2, 3), "l1")


# --- the trainer ---------------------------------------------------------------------------------------

class _CountingObjective:
    """loss = (p - 3)^2, which becomes NaN (or inf) from step `bad_step` on."""

    def __init__(self, bad_step: int, bad_value: float = math.nan):
        self.p = nn.Parameter(torch.tensor([1.0]))
        self.calls, self.bad_step, self.bad_value = 0, bad_step, bad_value

    def trainable_parameters(self):
        return [self.p]

    def train_mode(self):
        pass

    def loss(self, batch):
        self.calls += 1
        loss = ((self.p - 3.0) ** 2).sum()
        if self.calls >= self.bad_step:
            loss = loss * self.bad_value
        return {"loss": loss, "aux": loss.detach() * 2}


def _dummy_loader(n_batches: int):
    return [{"x": torch.zeros(2), "n": 2} for _ in range(n_batches)]


TRAINING = {"epochs": 1, "batch_size": 2, "optimizer": {"name": "adam", "lr": 0.1}}


@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_fit_stops_on_non_finite_loss_naming_the_step(bad_value):
    objective = _CountingObjective(bad_step=3, bad_value=bad_value)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(objective, _dummy_loader(5), TRAINING, CPU, desc="nan-test")
    msg = str(info.value)
    assert "step 3" in msg and "nan-test" in msg and "aux=" in msg
    assert objective.calls == 3
    # the two finite steps were taken, the bad one was not applied
    assert torch.isfinite(objective.p).all() and objective.p.item() != 1.0


def test_fit_trains_and_reports():
    objective = _CountingObjective(bad_step=10**9)
    stats = trainer.fit(objective, _dummy_loader(4), {**TRAINING, "epochs": 3}, CPU)
    assert stats["steps"] == 12 and stats["images_seen"] == 24 and stats["epochs"] == 3.0
    assert stats["first_loss"] == pytest.approx(4.0)
    assert stats["final_losses"]["loss"] < stats["first_loss"]
    assert abs(objective.p.item() - 3.0) < 2.0 - 1e-3


def test_fit_max_steps():
    objective = _CountingObjective(bad_step=10**9)
    stats = trainer.fit(objective, _dummy_loader(4), {**TRAINING, "epochs": 10, "max_steps": 5}, CPU)
    assert stats["steps"] == 5 and objective.calls == 5


def test_fit_rejects_an_objective_without_parameters():
    objective = _CountingObjective(bad_step=10**9)
    objective.trainable_parameters = lambda: []
    with pytest.raises(ValueError, match="no trainable parameters"):
        trainer.fit(objective, _dummy_loader(1), TRAINING, CPU)


def _train_tiny_mae(seed: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
    g = seed_everything(seed)
    model = build_model("mae", TINY_ARCH, image_size=32, in_chans=1)
    spec = {"kind": "mixed", "size": 16, "ratio": 0.75}
    loader = ImageLoader(images, 32, g, mask_fn=mask_sampler(spec, 32, model.mask_granularity, g))
    training = {"epochs": 1, "batch_size": 32, "max_steps": 3,
                "optimizer": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.05}}
    trainer.fit(FamilyObjective(model), loader, training, CPU)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_is_deterministic_for_a_seed():
    images = codec().encode(fashion_subset(128, train=False)[0])
    a = _train_tiny_mae(0, images)
    b = _train_tiny_mae(0, images)
    c = _train_tiny_mae(1, images)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between two runs with the same seed"
    assert any(not torch.equal(a[k], c[k]) for k in a), "a different seed gave identical parameters"


def test_build_optimizer():
    p = [nn.Parameter(torch.zeros(1))]
    adamw = trainer.build_optimizer(p, {"name": "adamw", "lr": 0.5, "betas": [0.8, 0.9], "weight_decay": 0.1})
    assert isinstance(adamw, torch.optim.AdamW)
    group = adamw.param_groups[0]
    assert group["lr"] == 0.5 and group["betas"] == (0.8, 0.9) and group["weight_decay"] == 0.1
    adam = trainer.build_optimizer(p, {"name": "adam", "lr": 0.01})
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0.0
    sgd = trainer.build_optimizer(p, {"name": "sgd", "lr": 0.1})
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0
    p[0].grad = torch.tensor([2.0])
    sgd.step()
    assert p[0].item() == pytest.approx(-0.2)  # a plain gradient step: θ − lr·∇
    with pytest.raises(ValueError, match="no betas"):
        trainer.build_optimizer(p, {"name": "sgd", "lr": 0.1, "betas": [0.9, 0.99]})
    with pytest.raises(ValueError):
        trainer.build_optimizer(p, {"name": "lbfgs", "lr": 0.1})


# --- loaders -------------------------------------------------------------------------------------------------

def _identifiable(n: int, offset: float = 0.0) -> torch.Tensor:
    """Images whose every pixel is the image's own index (+ offset), so a batch tells which images it holds."""
    return (torch.arange(n, dtype=torch.float32) + offset).view(n, 1, 1, 1).expand(n, 1, 8, 8).clone()


def test_balanced_loader_pairs_equal_batches_and_oversamples_retain():
    retain, forget = _identifiable(5, 1000.0), _identifiable(23)
    g = torch.Generator().manual_seed(0)
    mask_fn = mask_sampler({"kind": "random", "ratio": 0.5}, 8, 4, g)
    loader = BalancedLoader(retain, forget, 8, g, mask_fn)
    assert len(loader) == 3
    all_retain = []
    for epoch in range(3):
        seen_forget, seen_retain, sizes = [], [], []
        for batch in loader:
            n = len(batch["x_f"])
            sizes.append(n)
            assert batch["x_r"].shape == batch["x_f"].shape
            assert batch["mask_r"].shape == batch["mask_f"].shape == (n, 1, 8, 8)
            assert batch["noise"].shape == batch["x_f"].shape
            assert batch["n"] == 2 * n
            seen_forget += batch["x_f"][:, 0, 0, 0].long().tolist()
            seen_retain += (batch["x_r"][:, 0, 0, 0] - 1000).long().tolist()
        assert sizes == [8, 8, 7]
        assert sorted(seen_forget) == list(range(23))  # every forget image once per epoch
        counts = torch.bincount(torch.tensor(seen_retain), minlength=5)
        assert len(counts) == 5 and int(counts.sum()) == 23
        # 23 draws from 5 images always hold at least 3 full reshuffled passes: every image >= 3 times
        assert int(counts.min()) >= 3
        all_retain += seen_retain
    # retain images are drawn as consecutive reshuffled passes over the retain set, across epochs too
    for start in range(0, len(all_retain) - 4, 5):
        assert sorted(all_retain[start: start + 5]) == list(range(5))


def test_balanced_loader_noise_and_validation():
    g = torch.Generator().manual_seed(0)
    mask_fn = mask_sampler({"kind": "center", "size": 4}, 8, 4, g)
    loader = BalancedLoader(_identifiable(4), _identifiable(4), 4, g, mask_fn, noise=NoiseSampler("uniform"))
    noise = next(iter(loader))["noise"]
    assert noise.min() >= -1.0 and noise.max() <= 1.0
    with pytest.raises(ValueError, match="non-empty"):
        BalancedLoader(_identifiable(0), _identifiable(4), 4, g, mask_fn)
    with pytest.raises(ValueError, match="non-empty"):
        BalancedLoader(_identifiable(4), _identifiable(0), 4, g, mask_fn)


def test_image_loader_covers_every_image_once_per_epoch():
    x = _identifiable(10)
    labels = torch.arange(10) * 3
    g = torch.Generator().manual_seed(0)
    loader = ImageLoader(x, 4, g, labels=labels)
    assert len(loader) == 3
    seen = []
    for batch in loader:
        ids = batch["x"][:, 0, 0, 0].long()
        assert torch.equal(batch["y"], ids * 3)  # labels stay with their images
        seen += ids.tolist()
    assert sorted(seen) == list(range(10))


# --- atomic writes --------------------------------------------------------------------------------------------

def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path):
    target = tmp_path / "out" / "result.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert temp_leftovers(tmp_path) == []


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1, 2], "b": 1}
    assert temp_leftovers(tmp_path) == []


def test_atomic_directory(tmp_path):
    target = tmp_path / "dir"
    with pytest.raises(RuntimeError):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "x.txt").write_text("x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "stale.txt").write_text("stale")
    with atomic_path(target, directory=True) as tmp:
        (tmp / "fresh.txt").write_text("fresh")
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert temp_leftovers(tmp_path) == []
