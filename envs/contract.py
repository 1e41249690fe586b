"""The search contract: what the search driver (`policysearch.search.driver`) and the controllers
(`policysearch.search.controllers.registry`) may ask of an env, written down as typed Protocols.

Every policysearch env (`policysearch.envs`) implements `SearchEnv`; any other Gymnasium env that
does can be searched the same way. The envs own their contract; the search layer above them drives
it and imports nothing else of `policysearch.envs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from policysearch.checks import check_choice
from policysearch.errors import ConfigError

if TYPE_CHECKING:
    import gymnasium as gym
    import numpy as np

__all__ = ["MODES", "Artefact", "SearchEnv", "SuggestsEpisodes", "as_search_env"]

# "schedule": one episode is one child training; "static": every step is one whole child training.
MODES: tuple[str, ...] = ("schedule", "static")


class Artefact(Protocol):
    """What `SearchEnv.export` returns: a file-ready policy (AugmentPolicy, LearnedSchedule, CompressionPlan)."""

    def save(self, path: str | Path) -> Path:
        """Write the artefact as JSON and return the path written."""
        ...


@runtime_checkable
class SearchEnv(Protocol):
    """What the search driver may ask of an env (`env.unwrapped`), besides Gymnasium's API.

    Call order: `reset` / `step` until the budget is spent; then `export(best episode's steps,
    provenance)` and `describe()`; when the run has a folder, `export_files(...)` once the
    controller is saved.

    The driver also reads these `info` keys: from `reset`, "val" (the child's validation figures
    before training) and "child_seed"; from every `step`, "train_flops" and "diverged" (None, or
    where the child diverged); from the last step of a finished episode, "metric" (the validation
    `reward_metric`, what the search ranks by). Everything else in `info` is logged as given.

    `get_state()` / `set_state(state)` hand out and take back the whole child training (weights,
    optimizer, schedule position, knobs so far, every RNG): after `set_state(s)` the env continues
    bit-identically on the CPU. Populations copy a strong child into a weak one with them, a
    resumed run restarts the episode in flight, a child moves between workers.

    Attributes:
        mode: One of `MODES`. "schedule": an episode is one child training (counted at its end);
            "static": every step is one whole child training.
        episode_length: Env steps in a full episode; sizes SB3 rollouts and the step budget.
        reward_metric: The validation metric `info["metric"]` holds ("accuracy", "macro_f1", ...).
        cost_metric: Units of an episode's cost: "seconds" or "tflops".
        cost_weight: An episode scores `metric - cost_weight * cost` (0: the metric alone).
        last_seconds: Wall time of the last step's child training. It stays out of `info` so that
            infos, and rewards unless the cost is in seconds, are reproducible.
    """

    mode: str
    episode_length: int
    reward_metric: str
    cost_metric: str
    cost_weight: float
    last_seconds: float

    def export(self, steps: list[dict[str, Any]], provenance: dict[str, Any] | None = None) -> Artefact:
        """The artefact an episode describes, from its logged steps (`info` plus "reward", "seconds")."""
        ...

    def describe(self) -> dict[str, Any]:
        """The settings that define this env's rewards, JSON-able, for provenance ("env_id",
        "dataset", "dataset_fingerprint", "model", "reward_metric", ... as far as they apply)."""
        ...

    def export_files(self, out_dir: Path, controller_path: Path | None, controller: str,
                     provenance: dict[str, Any]) -> dict[str, str]:
        """Write whatever else this env exports from a finished search into `out_dir`.

        Args:
            out_dir: The run folder.
            controller_path: The controller file the driver saved (None: the controller saved nothing).
            controller: The controller's name ("ppo", "random", ...).
            provenance: The search's provenance (versions, env, seed, budget).

        Returns:
            Extra entries for the summary's "files": a key -> the file's name in `out_dir`.
        """
        ...

    def get_state(self) -> dict[str, Any]:
        """The whole child training and episode so far, as a copy of tensors and plain values, headed
        ``{"kind": "policysearch_child_state", "format_version": 1, "env_id": ...}``; it is written by
        `policysearch.train.checkpoint.save_child_state` and loads with ``torch.load(weights_only=True)``."""
        ...

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue the child and episode of `state` (from `get_state` of an env built with the same
        arguments): the same actions then give bit-identical steps on the CPU. Raises ConfigError,
        naming the problem, for a state of another env id, format version or settings."""
        ...


@runtime_checkable
class SuggestsEpisodes(Protocol):
    """An optional capability: the env has its own low-dimensional baseline search space.

    The `tpe` / `cmaes` controllers then search it (one Optuna trial is one episode) instead of
    the raw action vector, which they can only do for a static-mode env.
    """

    def suggest_episode(self, trial: Any) -> list[np.ndarray]:
        """The actions of one whole episode, drawn from an Optuna `trial`."""
        ...


def _members(protocol: type) -> list[str]:
    """The attributes and methods a protocol declares."""
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    return [*getattr(protocol, "__annotations__", {}), *methods]


def as_search_env(env: gym.Env) -> SearchEnv:
    """`env.unwrapped`, checked against `SearchEnv`.

    Raises:
        ConfigError: If the env lacks part of the contract (the message names what), or has an unknown mode.
    """
    base = env.unwrapped
    if not isinstance(base, SearchEnv):
        missing = [name for name in _members(SearchEnv) if not hasattr(base, name)]
        raise ConfigError(
            f"{type(base).__name__} does not implement the search contract: it lacks {', '.join(missing)}; "
            "see policysearch.envs.contract.SearchEnv"
        )
    check_choice(f"{type(base).__name__}.mode", base.mode, MODES, error=ConfigError)
    return base
