"""Hypergradient descent (Baydin et al., ICLR 2018): the learning rate learns itself, online.

After every optimizer step the LR moves along the derivative of the loss with respect to the LR of
the step before. For plain SGD, where step ``t - 1`` was ``theta_t = theta_{t-1} - lr * g_{t-1}``,
that derivative is ``-g_t . g_{t-1}``, so the paper's SGD-HD rule is

    lr_t = lr_{t-1} + hyper_lr * (g_t . g_{t-1})

(the LR grows while consecutive gradients agree and shrinks when they oppose). For any optimizer
whose step is linear in the LR (SGD with momentum or Nesterov, weight decay, AdamW with decoupled
decay), the same derivative is ``-g_t . u_{t-1}`` with ``u_{t-1} = (theta_{t-1} - theta_t) / lr``
the previous update per unit of LR; this module uses that form, which is exactly the rule above
for plain SGD. Zero search, no extra forward or backward pass: the online baseline for learned
schedules. The LR is kept at or above 0 (the paper does not bound it; a negative LR would ascend).

It hooks into ``torch.optim.Optimizer.register_step_pre_hook`` / ``register_step_post_hook``, so
any training loop works unchanged::

    hd = Hypergradient(base_lr=0.05).attach(optimizer)   # sets the LR to 0.05 at once
    for x, y in batches:
        loss = loss_fn(model(x), y); optimizer.zero_grad(); loss.backward()
        optimizer.step()                                  # the hooks update the LR first
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from policysearch.checks import check_lr, check_number
from policysearch.errors import ConfigError
from policysearch.policies.schedule_kinds import ONLINE

__all__ = ["HYPER_LR", "Hypergradient", "HypergradientState"]

# The paper's hyper-LRs: beta = 1e-3 for SGD / SGD with Nesterov momentum, 1e-7 for Adam.
HYPER_LR = {"sgd": 1e-3, "adamw": 1e-7}


@dataclass
class HypergradientState:
    """What the hooks keep between steps; ``history`` holds the LR used at every step."""

    lr: float
    previous: list[torch.Tensor] | None = None  # u_{t-1}: the last update per unit of LR
    before: list[torch.Tensor] | None = None  # the parameters just before the step in flight
    history: list[float] = field(default_factory=list)


class Hypergradient:
    """An online LR schedule by hypergradient descent (see the module docstring).

    Args:
        base_lr: The initial LR (the model's default peak LR for a zero-search baseline).
        hyper_lr: The hypergradient step ``beta``; None takes the paper's value for the optimizer
            (:data:`HYPER_LR`: 1e-3 for SGD, 1e-7 for Adam / AdamW), decided in :meth:`attach`.
        name: A short label for reports.
    """

    SCHEDULE_KIND: ClassVar[str] = ONLINE

    def __init__(self, base_lr: float, hyper_lr: float | None = None, name: str = "hypergradient") -> None:
        self.base_lr = check_lr("base_lr", base_lr)
        self.hyper_lr = None if hyper_lr is None else check_number("hyper_lr", hyper_lr, 0.0)
        self.name = name
        self.state: HypergradientState | None = None

    def to_dict(self) -> dict[str, Any]:
        """The settings, for reports (not a file format)."""
        return {"name": self.name, "base_lr": self.base_lr, "hyper_lr": self.hyper_lr}

    def attach(self, optimizer: torch.optim.Optimizer) -> HypergradientState:
        """Set ``base_lr`` on every param group and hook the optimizer; returns the live state.

        Raises:
            ConfigError: If ``hyper_lr`` is None and the optimizer is neither SGD nor AdamW / Adam.
        """
        beta = self.hyper_lr
        if beta is None:
            kind = "adamw" if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) else (
                "sgd" if isinstance(optimizer, torch.optim.SGD) else None)
            if kind is None:
                raise ConfigError(f"hypergradient: no default hyper_lr for {type(optimizer).__name__}; pass hyper_lr")
            beta = HYPER_LR[kind]
        state = HypergradientState(lr=self.base_lr)
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def set_lr(lr: float) -> None:
            for group in optimizer.param_groups:
                group["lr"] = lr

        def pre_hook(opt: Any, args: Any, kwargs: Any) -> None:
            grads = [p.grad for p in params]
            if state.previous is not None:
                # d loss(theta_t) / d lr_{t-1} = -g_t . u_{t-1}; descend on it.
                dot = sum(float(torch.sum(g.float() * u)) for g, u in zip(grads, state.previous) if g is not None)
                state.lr = max(0.0, state.lr + beta * dot)
            set_lr(state.lr)
            state.history.append(state.lr)
            state.before = [p.detach().clone() for p in params]

        def post_hook(opt: Any, args: Any, kwargs: Any) -> None:
            if state.before is None:
                return
            if state.lr > 0.0:
                state.previous = [(b - p.detach()).float() / state.lr for b, p in zip(state.before, params)]
            else:
                state.previous = None  # no step taken: nothing to differentiate; the LR stays at 0
            state.before = None

        set_lr(self.base_lr)
        optimizer.register_step_pre_hook(pre_hook)
        optimizer.register_step_post_hook(post_hook)
        self.state = state
        return state
