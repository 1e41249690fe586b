"""The one registry every searcher goes through: a name, where its factory lives, what it drives, its status.

Built-in entries point at their factories by import path, so nothing heavy is imported until a
controller is built. Searchers outside the product (`policysearch.contrib`, or another package)
register themselves through the ``policysearch.controllers`` entry-point group: each entry point
names a function that calls `register`; the group is loaded the first time the registry is read.

| status | names |
|---|---|
| product | ppo, sac, a2c, td3, ddpg (SB3), random, tpe, cmaes (Optuna), pbt; uniform, local (compression) |
| contrib | es, probe (`policysearch.contrib`: kept to reproduce recorded results, not recommended) |

A controller *drives* an env (`Controller.run` on a `SearchVecEnv`) or a *plan* (`PlanSearcher.search`
on a compression teacher, no env).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

from policysearch.checks import check_choice
from policysearch.errors import ConfigError, UnknownNameError
from policysearch.search.controllers.base import Controller, ControllerSettings, PlanSearcher

__all__ = ["DRIVES", "ENTRY_POINT_GROUP", "STATUSES", "ControllerInfo", "check_controller_env", "controller_info",
           "controller_names", "make_controller", "register"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "policysearch.controllers"
DRIVES = ("env", "plan")
STATUSES = ("product", "contrib")


@dataclass(frozen=True)
class ControllerInfo:
    """One registry entry.

    Attributes:
        name: what ``--controller`` and `run_search` take.
        factory: ``"module:function"``; the function takes ``(name, ControllerSettings)`` and returns the
            controller. Imported only when the controller is built or its env check runs.
        drives: "env" (a `Controller`) or "plan" (a `PlanSearcher`, compression only).
        status: "product" (recommended where the docs say so) or "contrib" (kept to reproduce results).
        summary: one line for ``--help`` and the docs.
        reads: settings only this controller reads ("population", "es_tasks"); given to another, refused.
        extra: the optional extra it needs, if any.
        env_check: ``"module:function"`` that refuses (ConfigError) an env this controller cannot drive.
    """

    name: str
    factory: str
    drives: str = "env"
    status: str = "product"
    summary: str = ""
    reads: tuple[str, ...] = ()
    extra: str | None = None
    env_check: str | None = None

    def __post_init__(self) -> None:
        check_choice("controller drives", self.drives, DRIVES)
        check_choice("controller status", self.status, STATUSES)
        for path in (self.factory, self.env_check):
            if path is not None and ":" not in path:
                raise ConfigError(f"controller {self.name!r}: {path!r}, expected 'module:function'")

    def load(self) -> Any:
        """The factory function (imports its module)."""
        return _imported(self.factory)


def _imported(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, ControllerInfo] = {}
_plugins_loaded = False


def register(info: ControllerInfo, replace: bool = False) -> None:
    """Add a controller. A name already taken is refused unless `replace`."""
    if info.name in _REGISTRY and not replace and _REGISTRY[info.name] != info:
        raise ConfigError(f"controller {info.name!r} is already registered ({_REGISTRY[info.name].factory})")
    _REGISTRY[info.name] = info


_SB3 = "policysearch.search.controllers.sb3:make_sb3"
for _name, _summary in (("ppo", "PPO (stable-baselines3), rollouts of two episodes"),
                        ("sac", "SAC (stable-baselines3): a squashed Gaussian that cannot leave the action box"),
                        ("a2c", "A2C (stable-baselines3)"),
                        ("td3", "TD3 (stable-baselines3), AMC's family"),
                        ("ddpg", "DDPG (stable-baselines3), AMC's family")):
    register(ControllerInfo(_name, _SB3, summary=_summary))
register(ControllerInfo("random", "policysearch.search.controllers.baselines:make_random",
                        summary="uniform random actions: the baseline every claim must beat"))
for _name, _summary in (("tpe", "Optuna's TPE, one trial per child training"),
                        ("cmaes", "Optuna's CMA-ES, one trial per child training")):
    register(ControllerInfo(_name, "policysearch.search.controllers.baselines:make_optuna", summary=_summary,
                            extra="optuna"))
register(ControllerInfo("pbt", "policysearch.search.controllers.pbt:make_pbt", reads=("population",),
                        summary="population-based training: the weak copy the strong between segments"))
register(ControllerInfo("uniform", "policysearch.search.controllers.compression:make_uniform", drives="plan",
                        summary="one keep ratio for every channel group (the compression baseline)"))
register(ControllerInfo("local", "policysearch.search.controllers.compression:make_compass", drives="plan",
                        summary="compass search from the uniform plan, scored by distillation, moves confirmed "
                                "on fresh seeds"))


def _load_plugins() -> None:
    """Let every installed ``policysearch.controllers`` entry point register its controllers (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()()
        except Exception as exc:  # a broken plug-in must not take the built-in controllers down with it
            log.warning("controller plug-in %s (%s) failed to load: %s: %s", entry.name, entry.value,
                        type(exc).__name__, exc)


def controller_names(drives: str | None = None, status: str | None = None) -> tuple[str, ...]:
    """Registered names, in registration order, optionally only those that drive `drives` / have `status`."""
    _load_plugins()
    return tuple(n for n, i in _REGISTRY.items()
                 if (drives is None or i.drives == drives) and (status is None or i.status == status))


def controller_info(name: str) -> ControllerInfo:
    """The entry of `name`.

    Raises:
        UnknownNameError: not registered (the message lists the names, with a "did you mean").
    """
    _load_plugins()
    if name not in _REGISTRY:
        raise UnknownNameError("controller", name, tuple(_REGISTRY))
    return _REGISTRY[name]


def check_controller_env(name: str, base: Any) -> None:
    """Refuse an env that controller `name` cannot drive, before a run opens anything.

    Raises:
        ConfigError: a plan searcher given an env, or the controller's own `check_env` refuses it.
    """
    info = controller_info(name)
    if info.drives != "env":
        raise ConfigError(f"controller {name!r} searches compression plans on the teacher directly, not an env; "
                          f"env controllers: {', '.join(controller_names('env'))}")
    if info.env_check is not None:
        _imported(info.env_check)(base)


def check_settings(name: str, **given: Any) -> None:
    """Refuse a setting only other controllers read (`ControllerInfo.reads`), naming who reads it.

    Raises:
        ConfigError: e.g. a population given to `ppo`.
    """
    info = controller_info(name)
    for setting, value in given.items():
        if value is None or setting in info.reads:
            continue
        readers = [repr(n) for n, i in _REGISTRY.items() if setting in i.reads]
        several = len(readers) > 1
        raise ConfigError(f"{setting} is {value}, but only controller{'s' if several else ''} {' and '.join(readers)} "
                          f"{'have' if several else 'has'} a {setting.replace('_', ' ')} setting "
                          f"(controller {name!r} trains --workers children at once)")


def make_controller(name: str, settings: ControllerSettings | None = None) -> Controller | PlanSearcher:
    """Build controller `name` from `settings` (a `Controller` or, for compression, a `PlanSearcher`)."""
    info = controller_info(name)
    return info.load()(name, settings or ControllerSettings())
