"""``ProbePolicy``: probe, decide once, hold — a linear decision read off a run's first segment.

A run controlled by it trains its first ``probe`` segments at the base schedule itself (action 0,
factor 1), then takes ONE decision from the statistics those segments left,
``a = tanh(W [clip(obs, low, high), 1])`` (a ``LinearPolicy``'s rule on the observation clipped to
the range its weights were fitted on: a run unlike every training run gets the decision of the
nearest edge of that range, not an extrapolation), and holds that factor to the end. The
controller `probe` (``policysearch.contrib.probe``) learns ``W``; see there why one held decision.

It reads where it is in the run from the observation itself (Schedule-v1's, the residual layout of
``policies.schedule_space``): ``segments_left`` gives the decision's index and ``lr_factor`` the
action it took last, which it repeats. So it needs no memory and works wherever a ``LinearPolicy``
does (``AdaptiveSchedule``, ``AdaptiveLRCallback``, ``train_run``). Stored as plain JSON
(``kind: "probe_linear_policy"``): weights and two integers, never code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from policysearch.checks import check_int
from policysearch.errors import ConfigError
from policysearch.policies.artifact import require
from policysearch.policies.linear_policy import LinearPolicy
from policysearch.policies.schedule_space import RESIDUAL_OBSERVATION_NAMES

if TYPE_CHECKING:
    from gymnasium import spaces

__all__ = ["ProbePolicy", "decision_index"]

_LEFT = RESIDUAL_OBSERVATION_NAMES.index("segments_left")
_LAST_ACTION = RESIDUAL_OBSERVATION_NAMES.index("lr_factor")


def decision_index(observation: Any, segments: int) -> int:
    """Which decision of a run of `segments` a Schedule-v1 observation comes before (0 at the start)."""
    left = float(np.asarray(observation, np.float64).reshape(-1)[_LEFT])
    return segments - round(left * segments)


class ProbePolicy(LinearPolicy):
    """Action 0 for the first `probe` decisions, ``tanh(W [obs, 1])`` at decision `probe`, then the
    last action again (read from the observation's ``lr_factor``).

    Args:
        weights: Shape ``(1, observation_dim + 1)``, as for ``LinearPolicy``.
        observation_space, action_space: Schedule-v1's residual observation (``len(RESIDUAL_OBSERVATION_NAMES)``
            entries) and its 1-d action in [-1, 1].
        segments: Decisions per run (the env's ``episode_length``), to read the decision's index from
            ``segments_left``.
        probe: Segments trained at the base schedule before the decision (at least 1, fewer than `segments`).
        low, high: Per observation entry, the range the decision clips it to (None: the observation's own bounds).

    Raises:
        ConfigError: For another observation layout or action space, or `probe` out of range.
    """

    KIND: ClassVar[str] = "probe_linear_policy"
    FORMAT_VERSION: ClassVar[int] = 1
    algo: ClassVar[str] = "probe"

    def __init__(self, weights: Any, observation_space: spaces.Box, action_space: spaces.Box,
                 segments: int, probe: int = 1, low: Any = None, high: Any = None) -> None:
        super().__init__(weights, observation_space, action_space)
        if self.weights.shape[1] - 1 != len(RESIDUAL_OBSERVATION_NAMES):
            raise ConfigError(f"a probe policy reads Schedule-v1's {len(RESIDUAL_OBSERVATION_NAMES)}-entry residual "
                              f"observation, not {self.weights.shape[1] - 1} entries")
        if self.weights.shape[0] != 1 or not (np.allclose(self._low, -1.0) and np.allclose(self._high, 1.0)):
            raise ConfigError("a probe policy sets one action in [-1, 1] (Schedule-v1's)")
        self.segments = check_int("probe policy segments", segments, 2)
        self.probe = check_int("probe policy probe segments", probe, 1)
        if self.probe >= self.segments:
            raise ConfigError(f"a probe of {probe} segments leaves no decision in a run of {segments}")
        dim = self.weights.shape[1] - 1
        self.low = self._bound("low", low, np.broadcast_to(observation_space.low, (dim,)), dim)
        self.high = self._bound("high", high, np.broadcast_to(observation_space.high, (dim,)), dim)
        if np.any(self.low > self.high):
            raise ConfigError("a probe policy's clip range has low above high")

    @staticmethod
    def _bound(name: str, value: Any, default: np.ndarray, dim: int) -> np.ndarray:
        bound = np.array(default if value is None else value, dtype=np.float64).reshape(-1)
        if bound.shape != (dim,) or not np.isfinite(bound).all():
            raise ConfigError(f"a probe policy's clip {name} needs {dim} finite numbers, one per observation entry")
        return bound

    def act(self, observation: Any) -> np.ndarray:
        obs = np.asarray(observation, np.float64).reshape(-1)
        index = decision_index(obs, self.segments)
        if index < self.probe:
            value = 0.0
        elif index == self.probe:
            return super().act(np.clip(obs, self.low, self.high))
        else:  # hold: the observation carries the action taken last (exactly, as float32)
            value = float(np.clip(obs[_LAST_ACTION], -1.0, 1.0))
        return np.full(self.action_space.shape, value, dtype=self.action_space.dtype)

    # ------------------------------------------------------------------ files
    def to_dict(self, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**super().to_dict(provenance), "segments": self.segments, "probe": self.probe,
                "low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def _extra_fields(cls, data: dict[str, Any], source: str) -> dict[str, Any]:
        """`segments`, `probe` and the clip range (absent from files written before it: no clipping)."""
        fields = {"segments": require(data, "segments", int, source), "probe": require(data, "probe", int, source)}
        for name in ("low", "high"):
            if name in data:
                fields[name] = require(data, name, list, source)
        return fields
