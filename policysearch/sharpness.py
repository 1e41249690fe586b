"""What a run's start says about the LR it can take: the curvature of the loss at the initial weights.

Gradient descent on a quadratic is stable only while ``lr * lambda_max < 2`` (``2 (1 + momentum)``
with heavy-ball momentum), and networks trained with a large LR settle where the curvature meets
that bound (Cohen et al., ICLR 2021, "edge of stability"; Lewkowycz et al. 2020, the "catapult"
phase just above ``2 / lambda_0``). So ``lr * lambda_max`` at the initial weights is a dimensionless
measure of how close a model's default peak LR already is to the largest one its run can take, the
same quantity for any model, data set or size — which is what a rule learned on some tasks and used
on others needs (`policies.peak_rule`, `policysearch.contrib.peak_rule_search`).

``lambda_max`` is estimated by power iteration on exact Hessian-vector products (double backward;
attention through its plain kernel, as the fused ones have no second derivative) on one fixed batch
of training images, starting from the gradient's direction (which, at initialisation, lies mostly
in the top eigenspace: Gur-Ari et al. 2018). A finite difference of two gradients is cheaper but
useless here: with ReLUs a step along all weights at once crosses kinks, and the estimates of one
model varied twentyfold between batch sizes. It runs on a copy of the model with the RNG state
forked, so the run it precedes is unchanged bit for bit; its images are that run's cost.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from policysearch.checks import check_int
from policysearch.data.preprocess import normalise
from policysearch.tasks import get_task

__all__ = ["DEFAULT_IMAGES", "DEFAULT_ITERATIONS", "START_FEATURES", "StartStatistics", "batch_statistics",
           "layer_kinds", "start_statistics"]

# 32 images x 4 power iterations: 288 images' training per run. On the shipped rule's own table it keeps
# most of 128 x 8's cross-validated gain at a 7.6th of the cost (benchmarks/peak_rule_probe_cost.py).
DEFAULT_IMAGES = 32
DEFAULT_ITERATIONS = 4
# The features a peak rule reads (`StartStatistics.features`), in this order.
START_FEATURES: tuple[str, ...] = ("log_lr_sharpness", "log_steps", "adaptive")


@dataclass(frozen=True)
class StartStatistics:
    """The curvature estimate at a run's start and what it cost.

    Attributes:
        sharpness: The Hessian's largest-magnitude eigenvalue on the batch (its absolute value).
        loss: The batch's loss at the initial weights.
        grad_norm: The batch gradient's norm.
        images: Images through forward and backward passes (the estimate's training cost).
        seconds: Its wall-clock time.
    """

    sharpness: float
    loss: float
    grad_norm: float
    images: int
    seconds: float

    def features(self, lr: float, total_steps: int, optimizer: str) -> dict[str, float]:
        """The rule's inputs: ``log10(lr * sharpness)``, ``log10(total steps)``, and 1 for an adaptive
        optimizer (AdamW, whose stability bound is not ``lr * lambda``: the rule learns it apart)."""
        return {"log_lr_sharpness": math.log10(max(lr * self.sharpness, 1e-6)),
                "log_steps": math.log10(max(total_steps, 1)),
                "adaptive": 0.0 if optimizer == "sgd" else 1.0}

    def to_dict(self) -> dict[str, Any]:
        return {"sharpness": self.sharpness, "loss": self.loss, "grad_norm": self.grad_norm,
                "images": self.images, "seconds": round(self.seconds, 4)}


# The kinds of layers a net is made of, as a peak rule tells nets apart (`layer_kinds`): the families whose
# parameters shape the curvature differently. Anything else that holds parameters counts as "other"; a
# normalisation counts with or without its affine parameters.
_NORMS = ("batch_norm", "layer_norm", "group_norm")
_LAYER_FAMILIES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("batch_norm", (torch.nn.modules.batchnorm._BatchNorm,)),
    ("layer_norm", (torch.nn.LayerNorm, *((torch.nn.RMSNorm,) if hasattr(torch.nn, "RMSNorm") else ()))),
    ("group_norm", (torch.nn.GroupNorm, torch.nn.modules.instancenorm._InstanceNorm)),
    ("attention", (torch.nn.MultiheadAttention,)),
    ("conv", (torch.nn.modules.conv._ConvNd,)),
    ("linear", (torch.nn.Linear, torch.nn.Bilinear)),
    ("embedding", (torch.nn.Embedding, torch.nn.EmbeddingBag)),
)


def layer_kinds(model: torch.nn.Module) -> tuple[str, ...]:
    """The sorted kinds of the layers that hold `model`'s parameters: "linear", "conv", "batch_norm",
    "layer_norm", "group_norm", "attention", "embedding", or "other" (e.g. a class token on a custom module).

    A peak rule decides only for nets of the kinds its table had, and where they gained: with batch
    normalisation, for one, the loss is invariant to the scale of the weights before it and the step's effective
    size moves with their norm during the run (van Laarhoven 2017; Arora et al., ICLR 2019), so the curvature at
    the initial weights says less about the peak such a net can take."""
    kinds = set()
    for module in model.modules():
        family = next((name for name, types in _LAYER_FAMILIES if isinstance(module, types)), "other")
        if family in _NORMS or next(module.parameters(recurse=False), None) is not None:
            kinds.add(family)
    return tuple(sorted(kinds))


def _hvp_power_iteration(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
                         iterations: int, criterion: Any = None) -> tuple[float, float, float]:
    """(|top eigenvalue|, loss, gradient norm) by power iteration with exact Hessian-vector products."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = [p for p in net.parameters() if p.requires_grad]
    torch.manual_seed(seed)  # any dropout draws fixed by the seed (inside the caller's forked RNG)
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no second derivative
        loss = criterion(net(x), y) if criterion is not None else F.cross_entropy(net(x).float(), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
    grad_norm = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)))
    v = [g.detach() for g in grads]  # start along the gradient (mostly in the top eigenspace at init)
    if grad_norm == 0.0:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        v = [torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p in params]
    value = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((a * a).sum() for a in v))
        if not torch.isfinite(norm) or float(norm) == 0.0:
            break
        v = [a / norm for a in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        value = float(sum((h * a).sum() for h, a in zip(hv, v)))  # the Rayleigh quotient at v
        v = [h.detach() for h in hv]
    return abs(value) if math.isfinite(value) else math.inf, float(loss.detach()), grad_norm


def batch_statistics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                     iterations: int = DEFAULT_ITERATIONS, criterion: Any = None) -> StartStatistics:
    """The curvature of `model` (its current weights, a copy in train mode) on the batch `x`, `y`
    (inputs as the model takes them, integer labels; or any targets with ``criterion(outputs, y)``, e.g. a
    task's `criterion`): for a plain training loop. Neither `model` nor any RNG state outside this call
    changes."""
    check_int("sharpness iterations", iterations, 1)
    start = time.perf_counter()
    net = copy.deepcopy(model).train()  # train mode, as SGD sees it; the copy's norm statistics may move
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        sharpness, loss, grad_norm = _hvp_power_iteration(net, x, y, seed, iterations, criterion)
    # A Hessian-vector product costs about two backward passes: count each as two images' training.
    return StartStatistics(sharpness=sharpness, loss=loss, grad_norm=grad_norm, images=len(y) * (1 + 2 * iterations),
                           seconds=time.perf_counter() - start)


def start_statistics(model: torch.nn.Module, data: Any, seed: int, images: int = DEFAULT_IMAGES,
                     iterations: int = DEFAULT_ITERATIONS) -> StartStatistics:
    """`batch_statistics` on `images` training images of `data` (policysearch's device-resident
    splits) drawn by `seed`, normalised as the trainer does."""

    check_int("sharpness images", images, 1)
    device = data.x_train.device
    gen = torch.Generator(device=device).manual_seed(seed)
    idx = torch.randperm(len(data.y_train), generator=gen, device=device)[:min(images, len(data.y_train))]
    x = normalise(data.x_train[idx].float().div_(255.0), data)
    return batch_statistics(model, x, data.y_train[idx], seed, iterations, get_task(data.task).criterion(data))
