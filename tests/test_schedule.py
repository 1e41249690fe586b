"""Tests for policies/schedule.py: validation, interpolation, JSON, torch agreement, resumption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from policysearch.errors import ConfigError, PolicyFormatError, UnknownNameError
from policysearch.policies.schedule import (
    SCHEDULES,
    LearnedSchedule,
    ProgressLR,
    load_schedule,
    named_schedule,
)


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def _run(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    """LR used by each of ``steps`` optimizer steps, in the standard call order."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"progress": (0.0, 0.5, 0.5, 1.0), "log10_lr": (-1, -2, -3, -4)}, "strictly increasing"),
        ({"progress": (0.0, 0.7, 0.3, 1.0), "log10_lr": (-1, -2, -3, -4)}, "strictly increasing"),
        ({"progress": (0.1, 1.0), "log10_lr": (-1, -2)}, "start at 0.0"),
        ({"progress": (0.0, 0.9), "log10_lr": (-1, -2)}, "end at 1.0"),
        ({"progress": (0.0,), "log10_lr": (-1,)}, "at least 2"),
        ({"progress": (0.0, 1.0), "log10_lr": (-1, -2, -3)}, "log10_lr has 3 values, expected 2"),
        ({"progress": (0.0, 1.0), "log10_lr": (-1, 3.5)}, r"log10_lr\[1\]"),
        ({"progress": (0.0, 1.0), "log10_lr": (-1, math.nan)}, r"log10_lr\[1\]"),
        ({"progress": (0.0, math.inf), "log10_lr": (-1, -2)}, r"progress\[1\]"),
        ({"progress": (0.0, 1.0), "log10_lr": (-1, -2), "interpolation": "cubic"}, "unknown interpolation 'cubic'"),
        ({"progress": (0.0, 0.5, 1.0), "log10_lr": (-1, -2, -3), "interpolation": ("step",)}, "one per segment"),
        ({"progress": (0.0, 1.0), "log10_lr": (-1, -2), "name": ""}, "name"),
    ],
)
def test_invalid_schedules_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LearnedSchedule(**kwargs)


def test_lists_are_normalised_to_tuples() -> None:
    s = LearnedSchedule([0, 0.5, 1], [-1, -2, -3], ["step", "linear"])
    assert s.progress == (0.0, 0.5, 1.0) and s.interpolation == ("step", "linear")
    assert s == LearnedSchedule((0.0, 0.5, 1.0), (-1.0, -2.0, -3.0), ("step", "linear"))


# ---------------------------------------------------------------------- interpolation


def test_lr_at_each_mode_matches_hand_computed_values() -> None:
    knots, logs = (0.0, 0.4, 1.0), (-1.0, -3.0, -2.0)  # LRs 0.1, 0.001, 0.01
    lin = LearnedSchedule(knots, logs, "linear")
    assert lin.lr_at(0.0) == pytest.approx(0.1)
    assert lin.lr_at(0.2) == pytest.approx(0.0505)  # halfway between 0.1 and 0.001
    assert lin.lr_at(0.4) == pytest.approx(0.001)
    assert lin.lr_at(0.7) == pytest.approx(0.0055)
    assert lin.lr_at(1.0) == pytest.approx(0.01)

    log = LearnedSchedule(knots, logs, "log-linear")
    assert log.lr_at(0.2) == pytest.approx(0.01)  # log10 halfway: -2
    assert log.lr_at(0.1) == pytest.approx(10**-1.5)
    assert log.lr_at(0.7) == pytest.approx(10**-2.5)

    cos = LearnedSchedule(knots, logs, "cosine")
    assert cos.lr_at(0.2) == pytest.approx((0.1 + 0.001) / 2)  # cos midpoint is the mean
    assert cos.lr_at(0.1) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 4)) / 2)
    assert cos.lr_at(1.0) == pytest.approx(0.01)

    step = LearnedSchedule(knots, logs, "step")
    assert step.lr_at(0.0) == pytest.approx(0.1)
    assert step.lr_at(0.399) == pytest.approx(0.1)
    assert step.lr_at(0.4) == pytest.approx(0.001)
    assert step.lr_at(0.99) == pytest.approx(0.001)

    mixed = LearnedSchedule(knots, logs, ("step", "linear"))
    assert mixed.lr_at(0.2) == pytest.approx(0.1)
    assert mixed.lr_at(0.7) == pytest.approx(0.0055)


def test_lr_at_clips_progress() -> None:
    s = LearnedSchedule((0.0, 1.0), (-1.0, -3.0), "log-linear")
    assert s.lr_at(-0.5) == s.lr_at(0.0)
    assert s.lr_at(7.0) == s.lr_at(1.0) == pytest.approx(1e-3)
    assert s.lrs([0.0, 0.5, 1.0]) == pytest.approx([0.1, 0.01, 0.001])
    with pytest.raises(ConfigError, match="nan"):
        s.lr_at(math.nan)


def test_from_lrs_holds_each_segment_lr() -> None:
    s = LearnedSchedule.from_lrs([0.1, 0.03, 0.001], provenance={"env_id": "policysearch/Schedule-v0"})
    assert s.progress == pytest.approx((0.0, 1 / 3, 2 / 3, 1.0))
    assert s.interpolation == "step"
    assert s.lrs([0.0, 0.2, 0.34, 0.5, 0.9, 1.0]) == pytest.approx([0.1, 0.1, 0.03, 0.03, 0.001, 0.001])
    assert s.provenance == {"env_id": "policysearch/Schedule-v0"}
    explicit = LearnedSchedule.from_lrs([0.1, 0.001], progress=[0.0, 1.0], interpolation="log-linear")
    assert explicit.lr_at(0.5) == pytest.approx(0.01)
    with pytest.raises(ConfigError, match=r"lrs\[1\]"):
        LearnedSchedule.from_lrs([0.1, 0.0])
    with pytest.raises(ConfigError, match="one knot per LR"):
        LearnedSchedule.from_lrs([0.1, 0.01], progress=[0.0, 0.5, 1.0])


# ---------------------------------------------------------------------- JSON


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    s = LearnedSchedule(
        (0.0, 1 / 3, 0.71, 1.0),
        (math.log10(0.037), -1.1234567891234567, -4.0, -7.5),
        ("linear", "cosine", "step"),
        name="found",
        provenance={"seed": 3, "env_id": "policysearch/Schedule-v0"},
    )
    path = s.save(tmp_path / "sub" / "s.json")
    loaded = LearnedSchedule.load(path)
    assert loaded == s
    assert loaded.provenance == s.provenance
    assert loaded.lrs([0.1, 0.5, 0.9]) == s.lrs([0.1, 0.5, 0.9])
    data = json.loads(path.read_text())
    assert data["kind"] == "lr_schedule" and data["format_version"] == 1
    single = LearnedSchedule((0.0, 1.0), (-2.0, -3.0))
    assert LearnedSchedule.from_dict(json.loads(json.dumps(single.to_dict()))) == single


def _valid() -> dict:
    return LearnedSchedule((0.0, 0.5, 1.0), (-1.0, -2.0, -3.0), "cosine").to_dict()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(kind="augment_policy"), "kind"),
        (lambda d: d.update(format_version=99), "format_version"),
        (lambda d: d.pop("progress"), "progress"),
        (lambda d: d.pop("log10_lr"), "log10_lr"),
        (lambda d: d.pop("interpolation"), "interpolation"),
        (lambda d: d.update(progress="0,0.5,1"), "progress"),
        (lambda d: d.update(log10_lr=[-1.0, "x", -3.0]), "log10_lr[1]"),
        (lambda d: d.update(interpolation=["cosine", 3]), "interpolation[1]"),
        (lambda d: d.update(interpolation="spline"), "interpolation"),
        (lambda d: d.update(progress=[0.0, 0.6, 0.5]), "progress"),
        (lambda d: d.update(log10_lr=[-1.0, -2.0]), "log10_lr"),
        (lambda d: d.update(name=5), "name"),
        (lambda d: d.update(provenance=[1]), "provenance"),
    ],
)
def test_corrupt_file_raises_policy_format_error_naming_the_field(tmp_path: Path, mutate, field: str) -> None:
    data = _valid()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyFormatError) as info:
        LearnedSchedule.load(path)
    assert field in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"kind": "lr_schedule", ')
    with pytest.raises(PolicyFormatError, match="not valid JSON"):
        LearnedSchedule.load(path)
    with pytest.raises(PolicyFormatError, match="no such file"):
        LearnedSchedule.load(tmp_path / "missing.json")
    path.write_text("[1, 2]")
    with pytest.raises(PolicyFormatError, match="expected a JSON object"):
        LearnedSchedule.load(path)


# ---------------------------------------------------------------------- torch agreement


def _torch_lrs(make, total_steps: int, base_lr: float) -> list[float]:
    opt = _optimizer(base_lr)
    return _run(opt, make(opt), total_steps)


def _ours(schedule: LearnedSchedule, total_steps: int) -> list[float]:
    opt = _optimizer()
    return _run(opt, schedule.scheduler(opt, total_steps), total_steps)


@pytest.mark.parametrize("total_steps", [10, 37, 200])
def test_onecycle_matches_torch(total_steps: int) -> None:
    base = 0.2
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=base, total_steps=total_steps, anneal_strategy="cos", three_phase=False
        ),
        total_steps,
        base,
    )
    got = _ours(named_schedule("onecycle", base, total_steps=total_steps), total_steps)
    assert got == pytest.approx(expected, rel=1e-6)


def test_onecycle_without_total_steps_has_the_ideal_shape() -> None:
    s = named_schedule("onecycle", 0.2)
    assert s.lr_at(0.0) == pytest.approx(0.2 / 25)
    assert s.lr_at(0.3) == pytest.approx(0.2)
    assert s.lr_at(1.0) == pytest.approx(0.2 / 25 / 1e4)
    # Close to torch's step-indexed version for a long run (off by at most one step).
    total = 1000
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=total), total, 0.2
    )
    got = _ours(s, total)
    assert max(abs(a - b) for a, b in zip(got, expected)) < 0.2 * 0.01


@pytest.mark.parametrize("total_steps", [10, 100])
def test_cosine_matches_torch(total_steps: int) -> None:
    base = 0.05
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=base * 1e-4),
        total_steps,
        base,
    )
    got = _ours(named_schedule("cosine", base), total_steps)
    assert got == pytest.approx(expected, rel=1e-6)


def test_step_matches_multistep() -> None:
    base, total = 0.1, 40
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[20, 30], gamma=0.1), total, base
    )
    assert _ours(named_schedule("step", base), total) == pytest.approx(expected, rel=1e-6)


def test_other_named_schedules() -> None:
    assert named_schedule("constant", 0.1).lrs([0, 0.3, 1]) == pytest.approx([0.1] * 3)
    wc = named_schedule("warmup-cosine", 0.1)
    assert wc.lr_at(0.0) == pytest.approx(0.001)
    assert wc.lr_at(0.025) == pytest.approx((0.001 + 0.1) / 2)
    assert wc.lr_at(0.05) == pytest.approx(0.1)
    assert wc.lr_at(1.0) == pytest.approx(1e-5)
    for name in SCHEDULES:
        s = named_schedule(name, 1e-3)  # small base LRs stay within the allowed LR range
        assert s.name == name
        assert LearnedSchedule.from_dict(s.to_dict()) == s


def test_unknown_schedule_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'cosine'"):
        named_schedule("cosin", 0.1)
    with pytest.raises(UnknownNameError, match="Did you mean 'onecycle'"):
        load_schedule("one-cycle", 0.1)
    with pytest.raises(ConfigError, match="base_lr"):
        named_schedule("cosine", -0.1)


def test_load_schedule_by_name_or_path(tmp_path: Path) -> None:
    assert load_schedule("cosine", 0.1) == named_schedule("cosine", 0.1)
    s = LearnedSchedule.from_lrs([0.1, 0.01])
    path = s.save(tmp_path / "mine.json")
    assert load_schedule(str(path), 123.0) == s
    with pytest.raises(PolicyFormatError, match="no such file"):
        load_schedule(str(tmp_path / "absent.json"), 0.1)


# ---------------------------------------------------------------------- ProgressLR


def test_progress_lr_sets_every_group_and_holds_final_lr() -> None:
    s = LearnedSchedule((0.0, 1.0), (-1.0, -3.0), "log-linear")
    opt = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 5.0}],
        lr=0.5,
    )
    sched = s.scheduler(opt, total_steps=4)
    assert isinstance(sched, ProgressLR)
    lrs = _run(opt, sched, 6)
    assert lrs == pytest.approx([0.1, 10**-1.5, 0.01, 10**-2.5, 0.001, 0.001])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.001])
    assert sched.get_last_lr() == pytest.approx([0.001, 0.001])
    with pytest.raises(ConfigError, match="total_steps"):
        s.scheduler(opt, total_steps=0)


def test_progress_lr_state_dict_resumes_exactly() -> None:
    s = named_schedule("onecycle", 0.1, total_steps=20)
    opt = _optimizer()
    sched = s.scheduler(opt, 20)
    uninterrupted = _run(opt, sched, 20)

    opt = _optimizer()
    sched = s.scheduler(opt, 20)
    first = _run(opt, sched, 10)
    state = json.loads(json.dumps(sched.state_dict()))  # must be plain JSON
    assert set(state) == {"last_epoch", "total_steps", "schedule"}

    # A fresh optimizer and a scheduler built from an unrelated schedule: the state alone restores it.
    opt2 = _optimizer(lr=0.7)
    sched2 = ProgressLR(opt2, named_schedule("constant", 0.7), total_steps=5)
    sched2.load_state_dict(state)
    second = _run(opt2, sched2, 10)
    assert first + second == uninterrupted
    assert sched2.schedule == s and sched2.total_steps == 20


def test_progress_lr_rejects_malformed_state() -> None:
    opt = _optimizer()
    sched = named_schedule("cosine", 0.1).scheduler(opt, 10)
    state = sched.state_dict()
    del state["total_steps"]
    with pytest.raises(PolicyFormatError, match="total_steps"):
        sched.load_state_dict(state)
