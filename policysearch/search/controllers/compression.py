"""Compression searchers that work on the teacher directly: `uniform` (one keep ratio everywhere, the
baseline) and `local` (a compass search from it, every move scored by distillation on the validation
split and confirmed on fresh batch orders; `policysearch.compression.refine`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policysearch.compression.refine import refine_plan
from policysearch.errors import ConfigError
from policysearch.search.controllers.base import ControllerSettings, PlanSearcher

__all__ = ["COMPASS_OPTIONS", "CompassSearcher", "UniformSearcher", "make_compass", "make_uniform"]

#: The compass search's settings (`ControllerSettings.options`), with their defaults.
COMPASS_OPTIONS: dict[str, Any] = {"steps": 200, "seeds": 2, "confirm_seeds": 2, "confirm_steps": None,
                                   "factor": 1.5, "rounds": 3, "lr": 0.01, "min_keep": 0.1, "workers": 1,
                                   "seed": 0, "progress": None}


class UniformSearcher(PlanSearcher):
    """No search: the uniform plan itself (the baseline every compression search must beat)."""

    name = "uniform"

    def search(self, start: Any, teacher: Any, data: Any) -> tuple[Any, dict[str, Any]]:
        return start, {}


class CompassSearcher(PlanSearcher):
    """Compass search from the uniform plan (`refine_plan`), on batch orders that are not the final
    distillation's: search seeds ``seed + 1000 + k``, confirmation seeds ``seed + 2000 + k``.

    Args:
        options: `COMPASS_OPTIONS` keys; an unknown key is refused.
    """

    name = "local"

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(COMPASS_OPTIONS))
        if unknown:
            raise ConfigError(f"controller 'local' has no setting {unknown[0]!r}; its settings: "
                              f"{', '.join(COMPASS_OPTIONS)}")
        self.options = {**COMPASS_OPTIONS, **options}

    def search(self, start: Any, teacher: Any, data: Any) -> tuple[Any, dict[str, Any]]:
        o = self.options
        say: Callable[[str], None] = o["progress"] or (lambda line: None)
        seeds = [o["seed"] + 1000 + k for k in range(o["seeds"])]
        confirm = [o["seed"] + 2000 + k for k in range(o["confirm_seeds"])]
        confirm_steps = o["confirm_steps"] or o["steps"]
        say(f"compass search from the uniform plan: each neighbour distilled {o['steps']} steps x {len(seeds)} "
            f"batch orders, a move confirmed on {len(confirm)} fresh ones ({confirm_steps} steps), "
            "validation split ...")
        result = refine_plan(start, teacher, data, steps=o["steps"], seeds=seeds, confirm_seeds=confirm,
                             factor=o["factor"], rounds=o["rounds"], lr=o["lr"], min_keep=o["min_keep"],
                             workers=o["workers"], progress=o["progress"], confirm_steps=confirm_steps)
        summary = result.summary()
        say(f"local search: {summary['moves']} moves, {result.distillations} distillations ({result.images:,} "
            f"images), {result.seconds / 60:.1f} min; validation {result.metric} {result.start_val_score:.4f} "
            f"(uniform) -> {result.val_score:.4f}")
        return result.plan, {"local_search": summary}


def make_uniform(name: str, settings: ControllerSettings) -> UniformSearcher:
    return UniformSearcher()


def make_compass(name: str, settings: ControllerSettings) -> CompassSearcher:
    return CompassSearcher(**settings.options)
