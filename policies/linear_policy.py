"""``LinearPolicy``: a feedback controller with one weight per observation entry, ``a = tanh(W [obs, 1])``.

The controller `es` (``policysearch.contrib.es``) learns one by CMA-ES instead of by gradient: a handful of
weights that read the env's observation (for Schedule-v1: progress, losses, their trends, gradient
norms, remaining budget, run length) and set the action. All-zero weights give the centre action,
which on Schedule-v1 is the base schedule itself, so a search starts there.

It has what ``AdaptiveSchedule`` needs of a controller (`predict`, `observation_space`,
`action_space`, `save`) and is stored as plain JSON (``kind: "linear_policy"``): weights, never code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.policies.artifact import read_json, require, unwrap, wrap, write_json

if TYPE_CHECKING:
    from gymnasium import spaces

__all__ = ["WEIGHTS_SUFFIX", "LinearPolicy"]

# A linear policy's file beside its AdaptiveSchedule sidecar: <prefix>.weights.json.
WEIGHTS_SUFFIX = ".weights.json"


class LinearPolicy:
    """``action = low + (high - low) * (tanh(W @ [obs, 1]) + 1) / 2``, per action entry.

    Args:
        weights: Shape ``(action_dim, observation_dim + 1)``; the last column is the bias.
        observation_space, action_space: Boxes (the action's bounds must be finite).

    Raises:
        ConfigError: If the shapes disagree or the weights are not finite.
    """

    KIND: ClassVar[str] = "linear_policy"
    FORMAT_VERSION: ClassVar[int] = 1
    algo: ClassVar[str] = "linear"  # the name AdaptiveSchedule records for this kind of controller

    def __init__(self, weights: Any, observation_space: spaces.Box, action_space: spaces.Box) -> None:
        w = np.asarray(weights, dtype=np.float64)
        obs_dim = int(np.prod(observation_space.shape))
        act_dim = int(np.prod(action_space.shape))
        if w.shape != (act_dim, obs_dim + 1):
            raise ConfigError(f"linear policy weights have shape {w.shape}, expected ({act_dim}, {obs_dim + 1}): "
                              "one row per action entry, one column per observation entry plus a bias")
        if not np.isfinite(w).all():
            raise ConfigError("linear policy weights must be finite")
        low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ConfigError("a linear policy needs a bounded action space")
        self.weights, self.observation_space, self.action_space = w, observation_space, action_space
        self._low, self._high = low.reshape(-1), high.reshape(-1)

    @classmethod
    def size(cls, observation_space: spaces.Box, action_space: spaces.Box) -> int:
        """How many numbers a policy for these spaces has (CMA-ES's dimension)."""
        return int(np.prod(action_space.shape)) * (int(np.prod(observation_space.shape)) + 1)

    @classmethod
    def from_vector(cls, vector: Any, observation_space: spaces.Box, action_space: spaces.Box) -> LinearPolicy:
        """The policy whose weights, row by row, are ``vector`` (as CMA-ES proposes them)."""
        act_dim = int(np.prod(action_space.shape))
        return cls(np.asarray(vector, np.float64).reshape(act_dim, -1), observation_space, action_space)

    def act(self, observation: Any) -> np.ndarray:
        """The action for one observation, shaped like the action space."""
        x = np.append(np.asarray(observation, np.float64).reshape(-1), 1.0)
        squashed = np.tanh(self.weights @ x)
        action = self._low + (self._high - self._low) * (squashed + 1.0) / 2.0
        return action.astype(self.action_space.dtype).reshape(self.action_space.shape)

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Stable-baselines3's signature (the policy is deterministic either way)."""
        return self.act(observation), None

    # ------------------------------------------------------------------ files
    def to_dict(self, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"observation_dim": int(self.weights.shape[1] - 1), "action_dim": int(self.weights.shape[0]),
                "weights": self.weights.tolist()}
        return wrap(self.KIND, self.FORMAT_VERSION, body, provenance)

    def save(self, path: str | Path) -> Path:
        """Write the weights as JSON (atomically); return the path."""
        return write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path, observation_space: spaces.Box, action_space: spaces.Box,
             source: str | None = None) -> LinearPolicy:
        """Read a file written by :meth:`save` for these spaces.

        Raises:
            PolicyFormatError: If the file is malformed or its shapes do not fit the spaces.
        """
        source = source or str(path)
        data = unwrap(read_json(path), cls.KIND, cls.FORMAT_VERSION, source)
        weights = require(data, "weights", list, source)
        extra = cls._extra_fields(data, source)
        try:
            return cls(weights, observation_space, action_space, **extra)
        except (ConfigError, ValueError, TypeError) as exc:
            where = "" if extra else "field 'weights': "  # a subclass's error may name another field
            raise PolicyFormatError(f"{source}: {where}{exc}") from exc

    @classmethod
    def _extra_fields(cls, data: dict[str, Any], source: str) -> dict[str, Any]:
        """A subclass's further constructor arguments, read from its file (none here)."""
        return {}
