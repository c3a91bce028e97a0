"""Unlearning methods: baseline losses against hand computations, trained parameter sets, the ε-constrained
update on a convex toy with a known Pareto set, EBU's selection/modulation/EWC, and a short real fit of every
registered method on a tiny MAE with Fashion-MNIST images."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import TINY_ARCH, codec, fashion_subset
from pipeline_lib.training import trainer
from pipeline_lib.training.loaders import BalancedLoader, mask_sampler
from pipeline_lib.methods import METHODS, build_method, epsilon_levels
from pipeline_lib.methods.controllable import control_psi, controllable_update, sqp_direction
from pipeline_lib.methods.ebu import (
    EBU,
    ebu_direction,
    ewc_gradient,
    modulated_forget_gradient,
    saliency_masks,
    top_fraction_mask,
)
from pipeline_lib.models import I2IModel, build_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


CPU = torch.device("cpu")


class LinearI2I(I2IModel):
    """A fixed linear encoder/decoder on 1x2x2 images: E(x) = T(x) W_E, h(x) = E(x) W_D, T zeroes hidden pixels."""

    family = "linear-test"

    def __init__(self, w_enc: torch.Tensor, w_dec: torch.Tensor):
        super().__init__()
        self.w_enc = nn.Parameter(w_enc.clone())
        self.w_dec = nn.Parameter(w_dec.clone())

    def encoder_parameters(self):
        return [self.w_enc]

    def encode(self, x, mask):
        return x.masked_fill(mask, 0.0).flatten(1) @ self.w_enc

    def output(self, x, mask):
        return (self.encode(x, mask) @ self.w_dec).view_as(x)

    def reconstruct(self, x, mask):
        return torch.where(mask, self.output(x, mask), x)

    def training_loss(self, x, mask):
        return (self.output(x, mask) - x)[mask.expand_as(x)].pow(2).mean()


W_ENC = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 2.0, 1.0]])
W_DEC = torch.tensor([[0.5, -1.0, 0.0, 1.0], [1.0, 0.0, 0.5, -0.5], [0.0, 1.0, 1.0, 0.25]])
W_ENC0 = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [2.0, -1.0, 0.5], [0.0, 0.0, 1.0]])


def linear_pair():
    return LinearI2I(W_ENC, W_DEC), LinearI2I(W_ENC0, W_DEC)


def hand_batch():
    x_r = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.5, -1.0], [2.0, 0.0]]]])
    x_f = torch.tensor([[[[-2.0, 1.0], [0.0, 3.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    noise = torch.tensor([[[[0.3, -0.7], [1.1, 0.2]]], [[[-0.4, 0.9], [0.0, -1.3]]]])
    mask_r = torch.tensor([[[[False, True], [False, True]]], [[[True, False], [True, False]]]])
    mask_f = torch.tensor([[[[True, False], [False, False]]], [[[False, True], [True, True]]]])
    return {"x_r": x_r, "x_f": x_f, "noise": noise, "mask_r": mask_r, "mask_f": mask_f, "n": 4}


# --- independent hand computations (plain torch, per sample) ---------------------------------------------

def h(w_enc, x, m):
    """The linear model's full output, written out again: (x with hidden pixels zeroed) W_E W_D."""
    visible = torch.where(m, torch.zeros_like(x), x).reshape(len(x), 4)
    return (visible @ w_enc @ W_DEC).reshape(x.shape)


def per_sample(pred, target, m, norm, region):
    """Batch-mean per-sample L2, or the MSE, over the hidden pixels (region hidden) or all pixels."""
    rows = []
    for i in range(len(pred)):
        sel = m[i].expand_as(pred[i]) if region == "hidden" else torch.ones_like(pred[i], dtype=torch.bool)
        rows.append((pred[i][sel] - target[i][sel]))
    if norm == "l2":
        return sum(math.sqrt(float((r ** 2).sum())) for r in rows) / len(rows)
    return sum(float((r ** 2).sum()) for r in rows) / sum(r.numel() for r in rows)


def expected_baseline(name, batch, alpha, norm, region):
    out_r = h(W_ENC, batch["x_r"], batch["mask_r"])
    out_f = h(W_ENC, batch["x_f"], batch["mask_f"])
    retain = per_sample(out_r, batch["x_r"], batch["mask_r"], norm, region)
    target_f = {"max_loss": batch["x_f"], "noisy_label": batch["noise"], "retain_label": batch["x_r"]}[name]
    forget = per_sample(out_f, target_f, batch["mask_f"], norm, region)
    sign = -1.0 if name == "max_loss" else 1.0
    return retain, forget, retain + sign * alpha * forget


@pytest.mark.parametrize("region", ["hidden", "full"])
@pytest.mark.parametrize("norm", ["l2", "mse"])
@pytest.mark.parametrize("name", ["max_loss", "noisy_label", "retain_label"])
def test_output_baseline_losses_match_hand_computation(name, norm, region):
    batch = hand_batch()
    model, teacher = linear_pair()
    method = build_method(name, model, teacher, alpha=0.3, norm=norm, region=region)
    out = {k: float(v.detach()) for k, v in method.loss(batch).items()}
    retain, forget, total = expected_baseline(name, batch, 0.3, norm, region)
    assert out["retain"] == pytest.approx(retain, rel=1e-6)
    assert out["forget"] == pytest.approx(forget, rel=1e-6)
    assert out["loss"] == pytest.approx(total, rel=1e-6)


def test_noisy_label_single_pixel_by_arithmetic():
    """One hidden pixel per image: the per-sample L2 is the absolute error at that pixel."""
    w_enc = torch.zeros(4, 3)
    w_enc[0, 0] = 1.0  # feature 0 = pixel (0,0); the decoder maps it to every pixel with weights of W_DEC row 0
    model = LinearI2I(w_enc, W_DEC)
    x = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    hidden = torch.tensor([[[[False, False], [False, True]]]])  # pixel (1,1) hidden; (0,0) visible
    noise = torch.tensor([[[[0.0, 0.0], [0.0, 5.0]]]])
    batch = {"x_r": x, "x_f": x, "noise": noise, "mask_r": hidden, "mask_f": hidden, "n": 2}
    out = {k: v.detach() for k, v in build_method("noisy_label", model, None, alpha=0.5, norm="l2").loss(batch).items()}
    # output at (1,1) = 2 * W_DEC[0, 3] = 2; retain |2 - 0| = 2, forget |2 - 5| = 3, loss 2 + 0.5 * 3
    assert float(out["retain"]) == pytest.approx(2.0) and float(out["forget"]) == pytest.approx(3.0)
    assert float(out["loss"]) == pytest.approx(3.5)


@pytest.mark.parametrize("norm", ["l2", "mse"])
def test_random_encoder_loss_matches_hand_computation(norm):
    batch = hand_batch()
    model, teacher = linear_pair()
    method = build_method("random_encoder", model, teacher, alpha=0.7, norm=norm, seed=11)
    out = {k: float(v.detach()) for k, v in method.loss(batch).items()}

    def T(x, m):
        return torch.where(m, torch.zeros_like(x), x).reshape(len(x), 4)

    d_r = T(batch["x_r"], batch["mask_r"]) @ W_ENC - T(batch["x_r"], batch["mask_r"]) @ W_ENC0
    feature_noise = torch.randn((2, 3), generator=torch.Generator().manual_seed(11))
    d_f = T(batch["x_f"], batch["mask_f"]) @ W_ENC - feature_noise  # noise in feature space, not E0(T(n))
    if norm == "l2":
        retain = sum(math.sqrt(float((r ** 2).sum())) for r in d_r) / 2
        forget = sum(math.sqrt(float((r ** 2).sum())) for r in d_f) / 2
    else:
        retain, forget = float((d_r ** 2).mean()), float((d_f ** 2).mean())
    assert out["retain"] == pytest.approx(retain, rel=1e-6)
    assert out["forget"] == pytest.approx(forget, rel=1e-6)
    assert out["loss"] == pytest.approx(retain + 0.7 * forget, rel=1e-6)
    other = build_method("random_encoder", *linear_pair(), alpha=0.7, norm=norm, seed=12)
    assert float(other.loss(batch)["forget"].detach()) != pytest.approx(forget, rel=1e-6)


@pytest.mark.parametrize("region", ["hidden", "full"])
@pytest.mark.parametrize("name,options", [("ebu", {}), ("controllable", {}),
                                          ("controllable", {"forget_target": "noise"})])
def test_teacher_matching_losses_match_hand_computation(name, options, region):
    """EBU: f = d(h(T(x_f)), n), r = d(h(T(x_r)), h0(T(x_r))); controllable (Alg. 1): f1 = d(h(T(x_f)), h0(T(n)))."""
    batch = hand_batch()
    method = build_method(name, *linear_pair(), alpha=0.6, norm="l2", region=region, **options)
    out = {k: float(v.detach()) for k, v in method.loss(batch).items()}
    out_f = h(W_ENC, batch["x_f"], batch["mask_f"])
    retain = per_sample(h(W_ENC, batch["x_r"], batch["mask_r"]), h(W_ENC0, batch["x_r"], batch["mask_r"]),
                        batch["mask_r"], "l2", region)
    if name == "ebu" or options:
        target_f = batch["noise"]
    else:
        target_f = h(W_ENC0, batch["noise"], batch["mask_f"])
    forget = per_sample(out_f, target_f, batch["mask_f"], "l2", region)
    assert out["retain"] == pytest.approx(retain, rel=1e-6)
    assert out["forget"] == pytest.approx(forget, rel=1e-6)
    assert out["loss"] == pytest.approx(retain + forget, rel=1e-6)


def test_controllable_encoder_space_losses_are_l2n_terms():
    batch = hand_batch()
    out = build_method("controllable", *linear_pair(), alpha=1.0, norm="mse", space="encoder").loss(batch)
    l2n = build_method("l2n", *linear_pair(), alpha=1.0, norm="mse").loss(batch)
    assert float(out["retain"].detach()) == pytest.approx(float(l2n["retain"].detach()), rel=1e-7)
    assert float(out["forget"].detach()) == pytest.approx(float(l2n["forget"].detach()), rel=1e-7)


@pytest.mark.parametrize("name", ["max_loss", "noisy_label", "retain_label", "random_encoder"])
def test_forget_targets_never_reach_the_retain_term(name):
    """The retain term depends on retain inputs only; changing every forget-side input leaves it unchanged."""
    batch = hand_batch()
    method = build_method(name, *linear_pair(), alpha=0.3, norm="l2")
    before = {k: float(v.detach()) for k, v in method.loss(batch).items()}
    changed = dict(batch, x_f=batch["x_f"] * -3.0 + 1.0, noise=batch["noise"] + 2.0, mask_f=batch["mask_f"].flip(0))
    after = {k: float(v.detach()) for k, v in method.loss(changed).items()}
    assert after["retain"] == pytest.approx(before["retain"], rel=1e-7)
    assert after["forget"] != pytest.approx(before["forget"], rel=1e-3)


def test_unknown_options_are_rejected():
    with pytest.raises(TypeError, match="does not take the option.s. sigma; it takes alpha, norm"):
        build_method("l2n", *linear_pair(), alpha=0.3, norm="l2", sigma=0.5)
    with pytest.raises(ValueError, match="region"):
        build_method("noisy_label", *linear_pair(), alpha=0.3, norm="l2", region="visible")
    with pytest.raises(ValueError, match="epsilon"):
        build_method("controllable", *linear_pair(), alpha=1.0, norm="l2", psi="epsilon")
    with pytest.raises(KeyError, match="unknown unlearning method"):
        build_method("gradient_ascent", *linear_pair(), alpha=0.3, norm="l2")


def test_a_diverging_phase_ii_run_names_beta():
    """Phase II's η ≈ β·(f1 − ε) feeds on a rising f1; the error must point at β, not only at the step size."""
    method = build_method("controllable", *linear_pair(), alpha=1.0, norm="l2", psi="epsilon", epsilon=-1.0,
                          beta=1e6)
    training = {"epochs": 50, "batch_size": 2, "optimizer": {"name": "sgd", "lr": 0.1}}
    with pytest.raises(trainer.NonFiniteLossError, match=r"beta = 1e\+06\): lower 'beta'"):
        trainer.fit(method, [hand_batch()], training, CPU, desc="phase-ii")
    assert "beta" not in (build_method("controllable", *linear_pair(), alpha=1.0, norm="l2").divergence_hint or "")


# --- trained parameter sets -----------------------------------------------------------------------------

def tiny_mae(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("mae", TINY_ARCH, image_size=32, in_chans=1)


ENCODER_ONLY = {"l2n": {}, "random_encoder": {}, "controllable": {"space": "encoder"}}
WHOLE_MODEL = {"max_loss": {}, "noisy_label": {}, "retain_label": {}, "ebu": {}, "controllable": {}}


@pytest.mark.parametrize("name,options", list(ENCODER_ONLY.items()) + list(WHOLE_MODEL.items()))
def test_trainable_parameter_sets(name, options):
    model = tiny_mae()
    trainable_before = {id(p) for p in model.parameters() if p.requires_grad}
    encoder = {id(p) for p in model.encoder_parameters()}
    method = build_method(name, model, None, alpha=0.5, norm="l2", **options)
    params = {id(p) for p in method.trainable_parameters()}
    now_trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if (name, options) in ENCODER_ONLY.items():
        assert params == encoder and now_trainable == encoder
    else:
        assert params == trainable_before and encoder < params
    assert id(model.pos_embed) not in params  # a fixed sin-cos table is never trained


def test_random_encoder_trains_only_the_linear_encoder():
    model, teacher = linear_pair()
    method = build_method("random_encoder", model, teacher, alpha=0.3, norm="l2")
    assert method.trainable_parameters() == [model.w_enc] and not model.w_dec.requires_grad
    noisy = build_method("noisy_label", *linear_pair(), alpha=0.3, norm="l2")
    assert {id(p) for p in noisy.trainable_parameters()} == {id(noisy.model.w_enc), id(noisy.model.w_dec)}


# --- the ε-constrained update on a convex toy --------------------------------------------------------------

A = torch.tensor([0.0, 0.0], dtype=torch.float64)
B = torch.tensor([2.0, 1.0], dtype=torch.float64)


def f1(theta):
    return ((theta - A) ** 2).sum()


def run_toy(mode, epsilon=None, steps=1500, lr=0.02, start=(1.5, -1.5), **options):
    """Plain gradient descent along the update of Algorithm 1 on f1 = |θ − a|², f2 = |θ − b|²."""
    theta, etas = torch.tensor(start, dtype=torch.float64), []
    for _ in range(steps):
        g, eta, _ = controllable_update(2 * (theta - A), 2 * (theta - B), f1(theta), mode, epsilon=epsilon,
                                        **options)
        etas.append(float(eta))
        theta = theta - lr * g
    return theta, etas


def distance_to_segment(theta):
    t = float(((theta - A) @ (B - A)) / ((B - A) @ (B - A)))
    return float((theta - (A + min(max(t, 0.0), 1.0) * (B - A))).norm())


def test_highest_mode_lands_on_the_forget_end_and_lowest_on_the_retain_end():
    high, etas_h = run_toy("highest")
    low, etas_l = run_toy("lowest")
    assert float((high - A).norm()) < 1e-2, high
    assert float((low - B).norm()) < 1e-2, low
    assert min(etas_h + etas_l) >= 0.0


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_epsilon_mode_lands_on_the_pareto_set_where_f1_equals_epsilon(fraction):
    (epsilon,) = epsilon_levels(float(f1(A)), float(f1(B)), [fraction])
    theta, etas = run_toy("epsilon", epsilon=epsilon)
    assert float(f1(theta)) == pytest.approx(epsilon, abs=1e-3)
    assert distance_to_segment(theta) < 1e-4
    assert min(etas) >= 0.0


def test_epsilon_mode_lets_f1_rise_when_below_epsilon():
    """Started at a (f1 = 0 < ε), the update must move away from a toward b until f1 = ε."""
    theta, _ = run_toy("epsilon", epsilon=2.0, start=(0.0, 0.0))
    assert float(f1(theta)) == pytest.approx(2.0, abs=1e-3) and distance_to_segment(theta) < 1e-4


def test_eta_max_turns_a_diverging_phase_ii_into_one_that_lands_on_epsilon():
    """Far from ε, η ≈ β·(f1 − ε) overshoots, the next f1 is larger and so is the next η: the run blows up.
    Bounding η (the paper's sup η_t < ∞) keeps the far steps stable; near ε the bound is inactive and f1
    settles on ε as without it."""
    (epsilon,) = epsilon_levels(float(f1(A)), float(f1(B)), [0.5])
    wild, etas = run_toy("epsilon", epsilon=epsilon, steps=30, start=(6.0, -6.0), beta=5.0)
    assert not torch.isfinite(f1(wild)) or float(f1(wild)) > 1e6, (wild, etas[-3:])
    tame, etas = run_toy("epsilon", epsilon=epsilon, start=(6.0, -6.0), beta=5.0, eta_max=10.0)
    assert max(etas) == pytest.approx(10.0) and min(etas) >= 0.0
    assert float(f1(tame)) == pytest.approx(epsilon, abs=1e-3) and distance_to_segment(tame) < 1e-4
    with pytest.raises(ValueError, match="eta_max"):
        build_method("controllable", *linear_pair(), alpha=1.0, norm="l2", psi="epsilon", epsilon=1.0, eta_max=0)


def test_sqp_direction_is_the_projection_onto_the_constraint_and_eta_is_never_negative():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        obj, con = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)
        psi = float(torch.randn(1, generator=g)) * 3
        d, eta = sqp_direction(obj, con, psi, varpi=0.0)
        assert float(eta) >= 0.0
        assert float(con @ d) >= psi - 1e-9  # the constraint ∇con·g ≥ ψ holds
        if float(obj @ con) >= psi:  # inactive: g is the objective's gradient itself
            assert torch.allclose(d, obj)
        else:  # active: g is the projection of ∇obj onto the hyperplane ∇con·g = ψ
            assert float(con @ d) == pytest.approx(psi, abs=1e-9)
            assert torch.allclose(d - obj, (d - obj) @ con / (con @ con) * con)


def test_control_psi_forms():
    g1, g2 = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])
    assert float(control_psi("highest", 1.0, g1, g2, alpha=0.5, delta=2)) == pytest.approx(0.5 * 25)
    assert float(control_psi("lowest", 1.0, g1, g2, alpha=0.5, delta=3)) == pytest.approx(0.5 * 8)
    # Phase II, scaled: β (f1 − ε)^δ ‖∇f1‖²; the power keeps the sign of f1 − ε even for an even δ
    assert float(control_psi("epsilon", 3.0, g1, g2, beta=2.0, delta=1, epsilon=1.0)) == pytest.approx(2 * 2 * 25)
    assert float(control_psi("epsilon", 0.0, g1, g2, beta=2.0, delta=2, epsilon=1.0)) == pytest.approx(-2 * 25)
    assert float(control_psi("epsilon", 3.0, g1, g2, beta=2.0, delta=1, epsilon=1.0, scaled=False)) == 4.0


def test_epsilon_levels():
    assert epsilon_levels(1.0, 3.0, [0.0, 0.25, 0.5, 1.0]) == [1.0, 1.5, 2.0, 3.0]
    with pytest.raises(ValueError, match="inconsistent"):
        epsilon_levels(3.0, 1.0, [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        epsilon_levels(1.0, 3.0, [1.5])


# --- EBU ------------------------------------------------------------------------------------------------------

class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.lin = nn.Linear(3, 4)
        self.scale = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return self.lin(x) * self.scale


def toy_gradients():
    net = ToyNet()
    params = list(net.parameters())
    g = torch.Generator().manual_seed(1)
    x_f, x_r = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    loss_f = (net(x_f) - torch.randn(5, 4, generator=g)).pow(2).mean()
    loss_r = (net(x_r) - 1.0).pow(2).mean()
    grads_f = [t.detach() for t in torch.autograd.grad(loss_f, params)]
    grads_r = [t.detach() for t in torch.autograd.grad(loss_r, params)]
    return params, grads_f, grads_r


def expected_top(grads, sigma):
    """The selected flat indices, by sorting |g| in plain Python."""
    flat = [abs(v) for t in grads for v in t.flatten().tolist()]
    k = int(math.floor(sigma * len(flat) + 0.5))
    return set(sorted(range(len(flat)), key=lambda i: -flat[i])[:k])


def flat_set(masks):
    flat = torch.cat([m.flatten() for m in masks])
    return set(flat.nonzero().flatten().tolist())


@pytest.mark.parametrize("sigma", [0.0, 0.2, 0.33, 0.5, 0.9, 1.0])
def test_top_fraction_selects_exactly_the_largest_gradients(sigma):
    params, grads_f, _ = toy_gradients()
    n = sum(p.numel() for p in params)  # 3*4 + 4 + 4 = 20 elements, all gradients non-zero and distinct
    masks = top_fraction_mask(grads_f, sigma)
    assert [m.shape for m in masks] == [p.shape for p in params]
    assert len(flat_set(masks)) == int(math.floor(sigma * n + 0.5))
    assert flat_set(masks) == expected_top(grads_f, sigma)


def test_top_fraction_never_selects_zero_gradients():
    grads = [torch.tensor([0.0, 3.0, 0.0, -1.0]), torch.tensor([[0.0, 0.5]])]
    assert flat_set(top_fraction_mask(grads, 0.75)) == {1, 3, 5}  # k = 5 but only three are non-zero
    with pytest.raises(ValueError):
        top_fraction_mask(grads, 1.5)


def test_ebu_overlap_modulation_and_direction():
    params, grads_f, grads_r = toy_gradients()
    sigma, alpha, gamma = 0.5, 0.6, 2.0
    masks = saliency_masks(grads_f, grads_r, sigma)
    sel_f, sel_r = expected_top(grads_f, sigma), expected_top(grads_r, sigma)
    assert flat_set(masks.forget) == sel_f and flat_set(masks.retain) == sel_r
    assert flat_set(masks.overlap) == sel_f & sel_r and sel_f & sel_r  # the toy does have an overlap
    assert flat_set(masks.retain_only) == sel_r - sel_f

    gf = torch.cat([t.flatten() for t in grads_f])
    gr = torch.cat([t.flatten() for t in grads_r])
    extra = torch.cat([t.flatten() for t in modulated_forget_gradient(grads_f, grads_r, masks, alpha)])
    for i in range(len(gf)):
        if i in sel_f & sel_r:
            assert float(extra[i]) == pytest.approx(alpha * float(gr[i]) + (1 - alpha) * float(gf[i]))
        elif i in sel_f:
            assert float(extra[i]) == pytest.approx(float(gf[i]))
        else:
            assert float(extra[i]) == 0.0

    # Eq. 12 with the EWC pull: θ displaced from θ0 everywhere, Fisher known
    values = [p.detach() for p in params]
    originals = [v - 0.1 * (j + 1) for j, v in enumerate(values)]
    fisher = [torch.full_like(v, 0.5) for v in values]
    direction, _ = ebu_direction(grads_f, grads_r, values, originals, fisher, sigma, alpha, gamma)
    d = torch.cat([t.flatten() for t in direction])
    disp = torch.cat([(v - o).flatten() for v, o in zip(values, originals)])
    for i in range(len(gf)):
        want = float(gf[i]) + float(gr[i])
        if i in sel_r - sel_f:
            want += gamma * 0.5 * float(disp[i])
        if i in sel_f:
            want += float(extra[i])
        assert float(d[i]) == pytest.approx(want, rel=1e-6, abs=1e-7)

    frozen, _ = ebu_direction(grads_f, grads_r, values, originals, fisher, sigma, alpha, gamma, freeze_unselected=True)
    fz = torch.cat([t.flatten() for t in frozen])
    for i in range(len(gf)):
        assert float(fz[i]) == (float(d[i]) if i in sel_f | sel_r else 0.0)


def test_ewc_pulls_retain_only_parameters_toward_the_originals():
    params, grads_f, grads_r = toy_gradients()
    masks = saliency_masks(grads_f, grads_r, 0.5)
    g = torch.Generator().manual_seed(4)
    values = [p.detach() for p in params]
    originals = [v + torch.randn(v.shape, generator=g) for v in values]
    fisher = [torch.rand(v.shape, generator=g) + 0.1 for v in values]
    pull = ewc_gradient(values, originals, fisher, masks, gamma=1.0)
    stepped = [v - 0.5 * p for v, p in zip(values, pull)]
    for v, o, s, m in zip(values, originals, stepped, masks.retain_only):
        assert torch.all((s - o).abs()[m] < (v - o).abs()[m])  # retain-only elements move toward θ0
        assert torch.equal(s[~m], v[~m])  # nothing else is pulled
    assert sum(int(m.sum()) for m in masks.retain_only) > 0


def test_ebu_backward_fills_every_gradient_with_the_transformed_direction():
    batch = hand_batch()
    model, teacher = linear_pair()
    method = build_method("ebu", model, teacher, alpha=0.6, norm="l2", sigma=0.5, gamma=3.0, region="full",
                          fisher_norm="none")
    params = method.trainable_parameters()
    losses = method.loss(batch)
    gf = [t.detach() for t in torch.autograd.grad(losses["forget"], params, retain_graph=True)]
    gr = [t.detach() for t in torch.autograd.grad(losses["retain"], params, retain_graph=True)]
    method.backward(losses, params)
    # the Fisher: mean over retain samples of the squared per-sample gradient of the teacher's training loss
    fisher = []
    for tp in (teacher.w_enc, teacher.w_dec):
        per = []
        for i in range(2):
            t = LinearI2I(teacher.w_enc.detach(), teacher.w_dec.detach())
            nll = t.training_loss(batch["x_r"][i:i + 1], batch["mask_r"][i:i + 1])
            per.append(torch.autograd.grad(nll, t.w_enc if tp is teacher.w_enc else t.w_dec)[0] ** 2)
        fisher.append((per[0] + per[1]) / 2)
    assert all(torch.allclose(a, b) for a, b in zip(method.fisher(params), fisher))
    values = [p.detach() for p in params]
    want, _ = ebu_direction(gf, gr, values, [teacher.w_enc, teacher.w_dec], fisher, 0.5, 0.6, 3.0)
    for p, w in zip(params, want):
        assert p.grad is not None and torch.allclose(p.grad, w, atol=1e-6)
    assert float(losses["ewc"]) > 0 and teacher.w_enc.grad is None and not teacher.w_enc.requires_grad
    method.fisher_norm = "mean"  # the default: F divided by its mean over every trained element
    normalised = method.fisher(params)
    mean = torch.cat([f.flatten() for f in fisher]).mean()
    assert all(torch.allclose(a, b / mean) for a, b in zip(normalised, fisher))


# --- a short real fit of every method --------------------------------------------------------------------

FIT_OPTIONS = {
    "controllable": [{}, {"psi": "lowest"}, {"psi": "epsilon", "epsilon": 0.5}, {"space": "encoder"}],
    "ebu": [{"sigma": 0.3, "gamma": 10.0}],
}


def fit_cases():
    for name in METHODS:
        for options in FIT_OPTIONS.get(name, [{}]):
            yield pytest.param(name, options, id=f"{name}-{'-'.join(map(str, options.values())) or 'default'}")


def _fashion_data():
    c = codec()
    retain, _ = fashion_subset(8, classes=[0, 2])
    forget, _ = fashion_subset(8, classes=[1])
    return c.encode(retain), c.encode(forget)


@pytest.mark.parametrize("name,options", list(fit_cases()))
def test_every_method_fits_a_tiny_mae(name, options):
    model = tiny_mae(seed=7)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    retain, forget = _fashion_data()
    g = torch.Generator().manual_seed(0)
    loader = BalancedLoader(retain, forget, 4, g,
                            mask_sampler({"kind": "random", "ratio": 0.75}, 32, model.mask_granularity, g))
    objective = build_method(name, model, None, alpha=0.5, norm="l2", **options)
    teacher_before = {n: p.detach().clone() for n, p in objective.teacher.named_parameters()}
    training = {"epochs": 1, "batch_size": 4, "max_steps": 2, "optimizer": {"name": "adam", "lr": 1e-3}}
    stats = trainer.fit(objective, loader, training, CPU, desc=name)
    assert stats["steps"] == 2
    assert all(math.isfinite(v) for v in stats["final_losses"].values()), stats["final_losses"]
    encoder = {id(p) for p in model.encoder_parameters()}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    decoder = {n for n, p in model.named_parameters() if id(p) not in encoder and n != "decoder_pos_embed"}
    encoder_only = name in ("l2n", "random_encoder") or options.get("space") == "encoder"
    if encoder_only:
        assert not changed & decoder, f"decoder parameters changed: {sorted(changed & decoder)}"
    else:
        assert changed & decoder, "a whole-model method left the decoder untouched"
    assert changed - decoder, "no encoder parameter changed"
    assert all(torch.equal(p, teacher_before[n]) for n, p in objective.teacher.named_parameters())
    if name == "ebu":
        assert isinstance(objective, EBU) and objective.last_masks is not None
