"""How a search env reaches a worker: a picklable function that builds a copy of it (with the
models only this process can resolve), checked to pickle before the first child trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policysearch.errors import ConfigError
from policysearch.imports import first_line
from policysearch.models import resolve_model, restore_models, shipped_models


def env_factory(env: Any, device: str | None = None) -> Callable[[], Any]:
    """A picklable function that builds a copy of `env`: `gymnasium.make` of its spec (every
    registered policysearch env made with `gymnasium.make` has one), on `device` if given (its
    prepared data moved there)."""
    spec = getattr(env, "spec", None) or getattr(getattr(env, "unwrapped", None), "spec", None)
    if spec is None:
        raise ConfigError("workers > 1 need an env made with gymnasium.make(...) (its spec is how workers "
                          "build their copies), or pass env_fn=")
    import gymnasium as gym

    models = _models_used(spec.kwargs)  # those only this process can resolve (registered, factories, templates)

    def make() -> Any:
        restore_models(models)
        if device is None:
            return gym.make(spec).unwrapped
        kwargs = dict(spec.kwargs)
        if kwargs.get("data") is not None:
            kwargs["data"] = kwargs["data"].to(device)
        kwargs["device"] = device
        return gym.make(spec.id, **kwargs).unwrapped

    return make


def _models_used(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The specs of the models an env's arguments name that only this process can resolve."""
    names = set()
    for value in (kwargs.get("model"), getattr(kwargs.get("child"), "model", None)):
        if value is not None:
            names.add(resolve_model(value).name)
    names.update(model for _, model in getattr(kwargs.get("tasks"), "pairs", ()))
    return {name: spec for name, spec in shipped_models().items() if name in names}


def check_crosses(env_fn: Callable[[], Any], backend: str) -> Callable[[], Any]:
    """`env_fn`, once it is known to pickle the way worker processes receive it (cloudpickle: SB3's
    SubprocVecEnv and Ray both use it), so that a model, data set or env argument that cannot be sent
    is refused before the first child trains, with the reason.

    Raises:
        ConfigError: it does not pickle (e.g. an object holding a lock or an open file).
    """
    import cloudpickle

    try:
        cloudpickle.dumps(env_fn)
    except Exception as exc:
        raise ConfigError(f"the env cannot be sent to {backend} worker processes ({type(exc).__name__}: "
                          f"{first_line(exc)}): give the model as 'module:function' or 'file.py:function', "
                          "keep unpicklable objects out of the env's arguments, or use one worker") from None
    return env_fn
