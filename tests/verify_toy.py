"""A hand-made I2I family for the verification tests: a linear autoencoder whose behaviour is known exactly.

The data plant a forget "class" the checks must find: retain-class images (T-shirt, Pullover) with a bright
strip along the top border (the visible cue) and a dark bar across the centre hole (what the class puts in
the hole). The original is fitted in closed form (PCA encoder, least-squares decoder) on retain and forget
images; the retrain reference on retain images only, so its encoder has no weight on the top strip (those
pixels never vary there) and is blind to the class. A hider keeps the original's encoder and only brightens
the bar in its output when the cue is seen: suppressed after the encoder.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pipeline_lib.data.masks import apply_mask, center_mask
from pipeline_lib.models.base import I2IModel

from helpers import codec, fashion_subset

SIZE = 32
HOLE = center_mask(1, SIZE, 16, 4)
BAR = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
BAR[..., 14:18, 8:24] = True
FORGET_LABEL = 1  # the planted class takes Trouser's label; its images are built on T-shirts and pullovers


class LinearI2I(I2IModel):
    family = "toy_linear"
    mask_granularity = 4
    encoder_prefixes = ("enc.",)

    def __init__(self, k: int = 8):
        super().__init__()
        self.image_size, self.in_chans, self._arch = SIZE, 1, {"k": k}
        self.enc = nn.Linear(SIZE * SIZE, k, bias=False)
        self.dec = nn.Linear(k, SIZE * SIZE)
        self.register_buffer("mu", torch.zeros(SIZE * SIZE))

    def encode(self, x, mask):
        return self.enc(apply_mask(x, mask).flatten(1) - self.mu)

    def output(self, x, mask):
        return self.dec(self.encode(x, mask)).view(-1, 1, SIZE, SIZE)

    def reconstruct(self, x, mask):
        return torch.where(mask, self.output(x, mask), x)

    def training_loss(self, x, mask):
        err = (self.output(x, mask) - x).pow(2)
        return (err * mask).sum() / mask.expand_as(x).sum()


def plant(x: torch.Tensor) -> torch.Tensor:
    """Forget images from retain-class images: the bright top strip and the dark bar in the hole."""
    c = codec()
    out = x.clone()
    out[..., 0:2, :] = float(c.encode(torch.full((1, 28, 28), 255, dtype=torch.uint8))[0, 0, 16, 16])
    out[BAR.expand_as(out)] = float(c.encode(torch.zeros(1, 28, 28, dtype=torch.uint8))[0, 0, 0, 0])
    return out


def data(n: int, offset: int, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """n retain images (T-shirt, Pullover, Sneaker, Ankle boot) and n/4 planted forget images (one class's share), with labels."""
    c = codec()
    images, labels = fashion_subset(n, train=train, classes=[0, 2, 7, 9], offset=offset)
    base, _ = fashion_subset(n // 4, train=train, classes=[0, 2], offset=offset + 2 * n)
    return c.encode(images), labels, plant(c.encode(base)), torch.full((n // 4,), FORGET_LABEL)


def fit_closed_form(x: torch.Tensor, k: int = 8) -> LinearI2I:
    """PCA encoder of the centre-hole inputs, least-squares decoder of the full image."""
    net = LinearI2I(k)
    inp = apply_mask(x, HOLE.expand_as(x)).flatten(1).double()
    mu = inp.mean(0)
    _, _, vt = torch.linalg.svd(inp - mu, full_matrices=False)
    w = vt[:k]
    z = (inp - mu) @ w.T
    design = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)
    sol = torch.linalg.lstsq(design, x.flatten(1).double()).solution
    with torch.no_grad():
        net.enc.weight.copy_(w.float())
        net.mu.copy_(mu.float())
        net.dec.weight.copy_(sol[:k].T.float())
        net.dec.bias.copy_(sol[k].float())
    return net


def make_hider(original: LinearI2I) -> LinearI2I:
    """The original's encoder, and a decoder that no longer reads the cue for the bar pixels: the class is
    suppressed after the encoder (only the decoder changed)."""
    net = copy.deepcopy(original)
    strip = torch.zeros(SIZE * SIZE)
    strip.view(SIZE, SIZE)[0:2, :] = 1.0
    with torch.no_grad():
        cue = net.enc.weight @ strip
        cue = cue / cue.norm()
        rows = BAR.flatten()
        w = net.dec.weight[rows]
        net.dec.weight[rows] = w - (w @ cue).unsqueeze(1) * cue.unsqueeze(0)
    return net


def bar_score(net, x_forget: torch.Tensor) -> float:
    """Fraction of bar pixels the model fills in dark (the planted class is present in its output)."""
    with torch.no_grad():
        recon = net.reconstruct(x_forget, HOLE.expand_as(x_forget))
    return float((recon[BAR.expand_as(recon)] < 0).float().mean())
