"""Accuracy under adversarial attack: FGSM (Goodfellow et al., 2015) and PGD (Madry et al., 2018).

Units, stated once: epsilon is the radius of an L-infinity ball in **[0, 1] pixel units on the
un-normalised image** (the uint8 image / 255), so ``eps=8/255`` means "each pixel moves by at most 8
grey levels". The model's normalisation (the training split's mean / std, `policysearch.train.evaluate.normalise`)
is applied *inside* the attacked function, and adversarial images are clipped to [0, 1]: what is
attacked is the image, not the network's input tensor.

* FGSM: one step, ``x + eps * sign(grad_x CE)``.
* PGD: `steps` signed-gradient steps of size ``step_size`` (default ``2.5 * eps / steps``, Madry et
  al.'s choice), each projected back onto the eps-ball, from a uniform random start in the ball drawn
  from a seeded generator (no global RNG is touched). At ``eps=0`` both leave the image unchanged.

The attacks run in float32 without autocast (a bf16 gradient sign is noisy), with the model in eval
mode, and ask autograd for the input gradient only (parameters' ``.grad`` stay untouched).
``fgsm_accuracy`` (`policysearch.metrics.REWARD_METRICS`) is FGSM accuracy at `REWARD_EPSILON` on the
validation split: one forward and backward pass per image, about three evaluations' cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policysearch.checks import check_int, check_number
from policysearch.data.preprocess import normalise
from policysearch.device import to_device
from policysearch.errors import UnknownNameError

__all__ = ["ATTACKS", "DEFAULT_PGD_STEPS", "REWARD_EPSILON", "attack_accuracy", "fgsm", "pgd"]

Forward = Callable[[torch.Tensor], torch.Tensor]

#: Attack names, as they appear in metric keys (``"fgsm_accuracy"``, ``"pgd_accuracy"``).
ATTACKS: tuple[str, ...] = ("fgsm", "pgd")
#: PGD steps when none are given.
DEFAULT_PGD_STEPS = 10
#: The epsilon of the ``fgsm_accuracy`` reward metric: 8 grey levels, the usual CIFAR-10 budget.
REWARD_EPSILON = 8 / 255
ATTACK_BATCH_SIZE = 256  # gradients of a whole 1024-image batch would cost memory for nothing


def _input_gradient(forward: Forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d(summed cross-entropy)/dx: the sum keeps each image's gradient independent of the batch size."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(forward(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM images: ``clip(x + eps * sign(grad_x CE(forward(x), y)), 0, 1)``.

    Args:
        forward: maps a float batch in [0, 1] to logits (normalisation inside).
        x: images in [0, 1].
        y: integer labels.
        eps: L-inf radius in [0, 1] pixel units.
    """
    eps = check_number("eps", eps, 0.0, 1.0)
    return (x + eps * _input_gradient(forward, x, y).sign()).clamp(0.0, 1.0).detach()


def pgd(forward: Forward, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = DEFAULT_PGD_STEPS,
        step_size: float | None = None, generator: torch.Generator | None = None,
        random_start: bool = True) -> torch.Tensor:
    """PGD images inside the L-inf ball of radius `eps` around `x`, clipped to [0, 1].

    Args:
        forward, x, y, eps: as in `fgsm`.
        steps: signed-gradient steps.
        step_size: per step; None: ``2.5 * eps / steps``.
        generator: draws the random start (None: a generator seeded with 0 on x's device).
        random_start: start from a uniform point in the ball rather than from `x`.
    """
    eps = check_number("eps", eps, 0.0, 1.0)
    steps = check_int("steps", steps, 1)
    alpha = 2.5 * eps / steps if step_size is None else check_number("step_size", step_size, 0.0)
    low, high = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    adv = x.detach().clone()
    if random_start and eps > 0:
        g = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
        noise = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
        adv = torch.maximum(torch.minimum(adv + (2 * noise - 1) * eps, high), low)
    for _ in range(steps):
        adv = adv + alpha * _input_gradient(forward, adv, y).sign()
        adv = torch.maximum(torch.minimum(adv, high), low).detach()
    return adv


def attack_accuracy(model: nn.Module, data: Any, split: str, eps: float, attacks: Sequence[str] = ATTACKS, *,
                    pgd_steps: int = DEFAULT_PGD_STEPS, seed: int = 0,
                    batch_size: int = ATTACK_BATCH_SIZE) -> dict[str, float]:
    """Accuracy of `model` on `split` under each attack at `eps`: ``{"fgsm_accuracy": ..., "pgd_accuracy": ...}``.

    Args:
        model: the classifier; moved to ``data.device`` and left in eval mode (as
            `policysearch.train.evaluate.predict`).
        data: a `DeviceData` (its mean / std normalise inside the attacked function).
        split: "train", "val" or "test".
        eps: L-inf radius in [0, 1] pixel units on the un-normalised image.
        attacks: a subset of `ATTACKS`.
        pgd_steps: PGD's steps.
        seed: seeds PGD's random starts (one generator for the whole split).
        batch_size: images per attacked batch (figures do not depend on it).
    """

    eps = check_number("eps", eps, 0.0, 1.0)
    for name in attacks:
        if name not in ATTACKS:
            raise UnknownNameError("attack", name, ATTACKS)
    batch_size = check_int("batch_size", batch_size, 1)
    model = to_device(model, data.device)
    model.eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(normalise(x, data))

    x_all, y_all = data.split_arrays(split)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    correct = dict.fromkeys(attacks, 0)
    for start in range(0, len(y_all), batch_size):
        x = x_all[start : start + batch_size].float().div_(255.0)
        y = y_all[start : start + batch_size]
        for name in attacks:
            adv = fgsm(forward, x, y, eps) if name == "fgsm" else pgd(forward, x, y, eps, pgd_steps,
                                                                        generator=generator)
            with torch.inference_mode():
                correct[name] += int((forward(adv).argmax(dim=1) == y).sum())
    n = max(1, len(y_all))
    return {f"{name}_accuracy": correct[name] / n for name in attacks}
