"""The zoo: artefacts shipped in ``policies/zoo/`` with their provenance, named ``zoo:NAME`` in every
loader (offline: they are package files).

Each entry is ``NAME.json`` (a closed-loop controller also ships ``NAME.zip`` or its weights beside
it); its ``kind`` field says what it is, so a loader accepts the names of its own kind and, given
another kind's name, says which loader takes it.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterable
from pathlib import Path

from policysearch.errors import ConfigError, UnknownNameError

__all__ = ["ZOO_DIR", "ZOO_PREFIX", "is_zoo", "resolve_zoo", "zoo_kinds", "zoo_names"]

ZOO_DIR = Path(__file__).parent / "zoo"
ZOO_PREFIX = "zoo:"

#: Shipped files kept to reproduce recorded results, with why a user should not pick them: loading one
#: by its zoo name warns (it stays loadable: the results that name it can be checked).
NOT_RECOMMENDED = {
    "adaptive": "it lost 4.7 points to onecycle on a held-out task (Fashion-MNIST 2k, CNN: 0.8051 vs 0.8521); "
                "use zoo:peak-rule (guarded) or `policysearch schedule`",
    "adaptive-linear": "the closed-loop LR controllers lose up to 8.65 points outside their training distribution; "
                       "use zoo:peak-rule (guarded) or `policysearch schedule`",
}

#: Which loader takes a kind: named in the message when a loader is given another kind's zoo name.
LOADERS = {
    "augment_policy": "policysearch.policies.load_policy (or --augment)",
    "lr_schedule": "policysearch.policies.load_schedule",
    "adaptive_lr_controller": "policysearch.policies.resolve_schedule or AdaptiveSchedule.load (or --schedule)",
    "peak_rule": "policysearch.policies.resolve_schedule or PeakRule.load (or --schedule)",
    "compression_plan": "CompressionPlan.load",
}


@functools.cache
def zoo_kinds() -> dict[str, str]:
    """Every shipped entry's name and kind."""
    kinds = {}
    for path in sorted(ZOO_DIR.glob("*.json")):
        if path.name.endswith(".weights.json"):
            continue  # a linear controller's weights, beside its sidecar
        try:  # package files: the loaders read them strictly; here only the kind is needed
            kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(kind, str):
            kinds[path.stem] = kind
    return kinds


def zoo_names(kinds: Iterable[str] | None = None) -> tuple[str, ...]:
    """The shipped names (all, or of `kinds`)."""
    wanted = None if kinds is None else set(kinds)
    return tuple(n for n, k in zoo_kinds().items() if wanted is None or k in wanted)


def is_zoo(spec: object) -> bool:
    return str(spec).startswith(ZOO_PREFIX)


def resolve_zoo(spec: str | Path, kinds: Iterable[str] | None = None) -> Path:
    """The file of ``zoo:NAME`` (any other spec is returned as a path, unchanged).

    Raises:
        UnknownNameError: a NAME the zoo does not ship ("Did you mean ...", the shipped names listed).
        ConfigError: a NAME of another kind than `kinds`; the message names the loader that takes it.
    """
    text = str(spec)
    if not is_zoo(text):
        return Path(spec)
    name = text[len(ZOO_PREFIX):]
    wanted = None if kinds is None else tuple(kinds)
    if name not in zoo_kinds():
        raise UnknownNameError("zoo entry (zoo:NAME)", name, zoo_names(wanted) or zoo_names())
    kind = zoo_kinds()[name]
    if wanted is not None and kind not in wanted:
        raise ConfigError(f"{text} is a {kind}, not a {' or '.join(wanted)}: load it with "
                          f"{LOADERS.get(kind, 'its own loader')}")
    if name in NOT_RECOMMENDED:
        warnings.warn(f"{text} is not recommended: {NOT_RECOMMENDED[name]}", UserWarning, stacklevel=3)
    return ZOO_DIR / f"{name}.json"
