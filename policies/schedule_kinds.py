"""The one schedule protocol: the four kinds of LR schedule a training run can follow.

Each schedule class says which kind it is (``SCHEDULE_KIND``), so a training loop decides how to
drive it once, from that declaration, instead of probing for methods:

| kind | what it provides | class |
|---|---|---|
| ``open_loop`` | ``lr_at(progress) -> lr``, progress in [0, 1] | `LearnedSchedule` (and the named schedules) |
| ``closed_loop`` | ``callback(optimizer, total_steps, val_fn)``: the LR from live statistics | `AdaptiveSchedule` |
| ``online`` | ``attach(optimizer)``: its optimizer hooks set the LR every step | `Hypergradient` |
| ``peak_rule`` | ``select(model, data, config, total_steps) -> (schedule, decision)`` at the run's start | `PeakRule` |

A user's own object with an ``lr_at(progress)`` method and no declaration is open loop: a pure
function of progress is the one kind that needs nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from policysearch.errors import ConfigError

__all__ = ["CLOSED_LOOP", "KINDS", "ONLINE", "OPEN_LOOP", "PEAK_RULE", "OpenLoop", "schedule_kind"]

OPEN_LOOP, CLOSED_LOOP, ONLINE, PEAK_RULE = "open_loop", "closed_loop", "online", "peak_rule"
KINDS: tuple[str, ...] = (OPEN_LOOP, CLOSED_LOOP, ONLINE, PEAK_RULE)


@runtime_checkable
class OpenLoop(Protocol):
    """An LR as a pure function of training progress in [0, 1]."""

    def lr_at(self, progress: float) -> float: ...


def schedule_kind(schedule: Any) -> str | None:
    """The kind of `schedule` (one of `KINDS`), None for no schedule (the base LR throughout).

    Raises:
        ConfigError: `schedule` declares no known kind and has no ``lr_at(progress)``.
    """
    if schedule is None:
        return None
    kind = getattr(schedule, "SCHEDULE_KIND", None)
    if kind is None and isinstance(schedule, OpenLoop):
        return OPEN_LOOP
    if kind not in KINDS:
        raise ConfigError(f"schedule {schedule!r} (a {type(schedule).__name__}) is not a schedule: expected an "
                          f"object with lr_at(progress) or a SCHEDULE_KIND in {', '.join(KINDS)}")
    return str(kind)
