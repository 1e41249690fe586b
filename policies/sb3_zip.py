"""Read a stable-baselines3 model zip without executing anything from it.

SB3's own ``PPO.load`` unpickles (cloudpickle) every ``:serialized:`` entry of the zip's ``data``
file — the spaces, the policy class, schedules — so a crafted zip runs code when it is loaded.
This reader never unpickles: it rebuilds the policy network from what the caller knows (the
observation / action contract of the env it was trained on) and from the plain-JSON parts of
``data`` (``policy_kwargs``: ``net_arch``, ``log_std_init``, a whitelisted activation), then loads
``policy.pth`` with ``torch.load(weights_only=True)``. Serialized entries are read only as text.

The zip's bytes are kept unchanged, so saving the loaded controller writes the same file back, and
users who trust it can still open it with SB3 (``PPO.load``) for further training.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from policysearch.checks import check_tensors, is_int
from policysearch.errors import PolicyFormatError
from policysearch.files import MAX_JSON_BYTES, atomic_write, parse_json

__all__ = ["SafeSB3Policy", "load_sb3_policy"]

# Activation classes a policy may name: their repr in SB3's readable description -> the class.
_ACTIVATIONS = {f"<class 'torch.nn.modules.activation.{name}'>": getattr(torch.nn, name)
                for name in ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid")}
# policy_kwargs keys that shape the network (passed on) or only matter for training (dropped).
_NETWORK_KEYS = {"net_arch", "log_std_init", "use_sde", "ortho_init", "full_std", "use_expln", "squash_output",
                 "share_features_extractor", "normalize_images", "n_critics", "clip_mean", "activation_fn"}
_TRAINING_KEYS = {"optimizer_class", "optimizer_kwargs"}
# Bounds checked before anything is inflated or allocated: a controller is kilobytes (a few small layers).
MAX_ZIP_BYTES = 64 * 2**20
MAX_MEMBER_BYTES = {"data": MAX_JSON_BYTES, "policy.pth": 32 * 2**20}
MAX_LAYER_WIDTH, MAX_LAYERS = 4096, 16
_POLICY_MODULES = {"ppo": "stable_baselines3.common.policies", "a2c": "stable_baselines3.common.policies",
                   "sac": "stable_baselines3.sac.policies"}


class SafeSB3Policy:
    """The policy network of an SB3 zip, with SB3's ``predict`` and the zip's original bytes.

    Attributes:
        policy: The SB3 policy module (``ActorCriticPolicy`` or ``SACPolicy``), in eval mode.
        observation_space, action_space: The spaces it was rebuilt with.
    """

    def __init__(self, policy: Any, raw: bytes) -> None:
        self.policy, self._raw = policy, raw
        self.observation_space, self.action_space = policy.observation_space, policy.action_space

    def predict(self, observation: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3's ``predict``: the (deterministic) action for one observation."""
        action, _ = self.policy.predict(observation, deterministic=deterministic)
        return action, None

    def save(self, path: str | Path) -> None:
        """Write the zip exactly as it was read (atomically)."""

        atomic_write(path, lambda f: f.write(self._raw))


def _readable_policy_kwargs(entry: Any, source: str) -> dict[str, Any]:
    """The network settings from ``data["policy_kwargs"]``, read as text; never unpickled."""
    if entry is None:
        return {}
    if not isinstance(entry, dict):
        raise PolicyFormatError(f"{source}: 'policy_kwargs' in the zip is {type(entry).__name__}, expected an object")
    kwargs: dict[str, Any] = {}
    for key, value in entry.items():
        if key in (":type:", ":serialized:") or key in _TRAINING_KEYS:
            continue
        if key not in _NETWORK_KEYS:
            raise PolicyFormatError(
                f"{source}: the controller's policy_kwargs set {key!r}, which this loader cannot rebuild "
                "without unpickling; load it with --trust-pickle (trust_pickle=True) only if you trust the file"
            )
        if key == "net_arch":
            _check_net_arch(value, source)
        if key == "n_critics" and (not is_int(value) or not 1 <= value <= 16):
            raise PolicyFormatError(f"{source}: policy_kwargs 'n_critics' is {value!r}, expected an int in 1..16")
        if key == "activation_fn":
            if value not in _ACTIVATIONS:
                raise PolicyFormatError(f"{source}: activation {value!r} is not one of {sorted(_ACTIVATIONS)}")
            value = _ACTIVATIONS[value]
        kwargs[key] = value
    if kwargs.get("use_sde"):
        raise PolicyFormatError(f"{source}: controllers trained with use_sde are not supported by the safe loader")
    return kwargs


def _check_net_arch(value: Any, source: str) -> None:
    """SB3's ``net_arch``: a list of layer widths, or a dict of such lists (``pi`` / ``vf`` / ``qf``),
    bounded, so a crafted zip cannot make the loader allocate a huge network."""
    lists = value.values() if isinstance(value, dict) else [value]
    for widths in lists:
        if not isinstance(widths, list) or len(widths) > MAX_LAYERS or \
                not all(is_int(w) and 1 <= w <= MAX_LAYER_WIDTH for w in widths):
            raise PolicyFormatError(f"{source}: policy_kwargs 'net_arch' is {str(value)[:80]}, expected at most "
                                    f"{MAX_LAYERS} layer widths in 1..{MAX_LAYER_WIDTH} (a list, or a dict of lists)")


def _read_member(archive: zipfile.ZipFile, name: str, source: str) -> bytes:
    """A member of the zip, its size checked against `MAX_MEMBER_BYTES` before it is inflated."""
    info = archive.getinfo(name)
    limit = MAX_MEMBER_BYTES[name]
    if info.file_size > limit:
        raise PolicyFormatError(f"{source}: its member {name!r} inflates to {info.file_size:,} bytes, expected at "
                                f"most {limit:,} (a controller is kilobytes); not read")
    with archive.open(info) as f:
        data = f.read(limit + 1)  # the header's size is not trusted either
    if len(data) > limit:
        raise PolicyFormatError(f"{source}: its member {name!r} inflates to more than {limit:,} bytes; not read")
    return data


def load_sb3_policy(path: str | Path, algo: str, observation_space: spaces.Box, action_space: spaces.Box,
                    source: str | None = None) -> SafeSB3Policy:
    """Rebuild the policy of an SB3 ``algo`` ("ppo", "a2c", "sac") zip for the given spaces.

    Raises:
        PolicyFormatError: The file is not an SB3 zip of that algorithm, names settings that
            cannot be rebuilt without unpickling, or its weights do not fit the spaces.
    """
    source = source or str(path)
    if algo not in _POLICY_MODULES:
        raise PolicyFormatError(f"{source}: algorithm {algo!r}, expected one of {', '.join(_POLICY_MODULES)}")
    try:
        size = Path(path).stat().st_size
        if size > MAX_ZIP_BYTES:
            raise PolicyFormatError(f"{source}: {size:,} bytes, expected a controller zip of at most "
                                    f"{MAX_ZIP_BYTES:,}; not read")
        raw = Path(path).read_bytes()
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            data = parse_json(_read_member(archive, "data", source), f"{source}: its 'data'", strict_numbers=False)
            pth = _read_member(archive, "policy.pth", source)
    except (OSError, KeyError, zipfile.BadZipFile, NotImplementedError, EOFError) as exc:
        raise PolicyFormatError(f"{source}: not a stable-baselines3 zip ({type(exc).__name__}: {exc})") from None
    try:
        weights = torch.load(io.BytesIO(pth), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's weights-only unpickler refuses anything but tensors
        raise PolicyFormatError(f"{source}: policy.pth holds more than tensors ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(weights, dict):
        raise PolicyFormatError(f"{source}: not a stable-baselines3 zip (unexpected 'data' or 'policy.pth')")
    policy_class = data.get("policy_class")
    module = policy_class.get("__module__") if isinstance(policy_class, dict) else None
    if module != _POLICY_MODULES[algo]:
        raise PolicyFormatError(f"{source}: its policy comes from {module!r}, expected an SB3 {algo.upper()} policy")
    kwargs = _readable_policy_kwargs(data.get("policy_kwargs"), source)
    if algo == "sac":
        from stable_baselines3.sac.policies import SACPolicy as policy_type
    else:
        from stable_baselines3.common.policies import ActorCriticPolicy as policy_type
    try:
        policy = policy_type(observation_space, action_space, lambda _: 0.0, **kwargs)
    except (RuntimeError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise PolicyFormatError(f"{source}: its settings do not make an {algo.upper()} policy ({detail})") from None
    # Every weight finite (NaN weights fail mid-training otherwise); names, shapes and dtypes as the policy's.
    check_tensors(source, weights)
    check_tensors(f"{source}: the weights do not fit an {algo.upper()} policy for these spaces", weights,
                  policy.state_dict())
    try:
        policy.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise PolicyFormatError(f"{source}: the weights do not fit an {algo.upper()} policy for these spaces "
                                f"({detail})") from None
    policy.set_training_mode(False)
    return SafeSB3Policy(policy, raw)
