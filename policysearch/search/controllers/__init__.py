"""Searchers: `base` (what each implements), `registry` (the one table every name goes through),
`sb3` (stable-baselines3 agents), `baselines` (random, Optuna's TPE / CMA-ES), `pbt` (population-based
training), `compression` (the uniform plan and the compass search from it)."""

from __future__ import annotations

from policysearch._lazy import lazy_names

_LAZY = {
    "Controller": "policysearch.search.controllers.base",
    "ControllerSettings": "policysearch.search.controllers.base",
    "PlanSearcher": "policysearch.search.controllers.base",
    "ControllerInfo": "policysearch.search.controllers.registry",
    "controller_info": "policysearch.search.controllers.registry",
    "controller_names": "policysearch.search.controllers.registry",
    "make_controller": "policysearch.search.controllers.registry",
    "register": "policysearch.search.controllers.registry",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
