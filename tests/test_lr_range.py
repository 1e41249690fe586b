"""The LR range test: an exponential sweep on a throwaway model, charged for its images."""

from __future__ import annotations

import dataclasses
import math

import pytest

from policysearch.errors import ConfigError
from policysearch.train.lr_range import lr_range_test
from policysearch.train.recipe import train_run
from policysearch.train.trainer import TrainConfig


def test_sweep_is_exponential_between_its_bounds_and_counts_its_images(digits):
    config = TrainConfig(model="mlp", batch_size=32, seed=0)
    test = lr_range_test(digits, config, steps=12, lr_low=1e-3, lr_high=1e-1, stop_factor=1e9)
    assert test.steps == 12 and test.images == 12 * 32 and not test.stopped
    assert test.lrs[0] == pytest.approx(1e-3) and test.lrs[-1] == pytest.approx(1e-1)
    ratios = [b / a for a, b in zip(test.lrs, test.lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios))  # a constant factor per step
    assert len(test.losses) == len(test.smoothed) == 12


def test_stops_when_the_loss_explodes_and_suggests_below_the_explosion(digits):
    config = TrainConfig(model="mlp", batch_size=32, seed=0)
    test = lr_range_test(digits, config, steps=60, lr_low=1e-3, lr_high=1e3)
    assert test.stopped and test.steps < 60
    assert test.lr_at_min_loss() < test.lrs[-1]
    assert test.suggestion("min/10") == pytest.approx(test.lr_at_min_loss() / 10)
    assert test.lrs[0] <= test.suggestion("steepest") <= test.lr_at_min_loss()
    assert all(math.isfinite(v) for v in test.smoothed)


def test_the_run_itself_is_untouched(digits):
    config = TrainConfig(model="mlp", batch_size=32, seed=3)
    before = train_run(digits, config, 1, progress=False).val["accuracy"]
    lr_range_test(digits, config, steps=10)
    assert train_run(digits, config, 1, progress=False).val["accuracy"] == before
    assert config.lr == TrainConfig(model="mlp").lr  # the caller's config is not changed


def test_bad_bounds_are_refused(digits):
    config = TrainConfig(model="mlp", batch_size=32)
    with pytest.raises(ConfigError, match="below"):
        lr_range_test(digits, config, steps=10, lr_low=0.1, lr_high=0.01)
    with pytest.raises(ConfigError):
        lr_range_test(digits, config, steps=2)
    with pytest.raises(ConfigError):
        lr_range_test(digits, config, steps=10).suggestion("valley")


# ---------------------------------------------------------------------- a run's peak from a range test
def test_train_run_with_a_range_test_peak_spends_the_same_images(digits):
    from policysearch.policies.schedule import named_schedule

    config = TrainConfig(model="mlp", batch_size=32, seed=1)
    plain = train_run(digits, config, 4, schedule=named_schedule("onecycle", config.lr), progress=False)
    tuned = train_run(digits, config, 4, schedule=named_schedule("onecycle", config.lr), progress=False,
                      peak="range-test")
    test = lr_range_test(digits, config)
    assert tuned.range_test["peak_lr"] == test.suggestion() and tuned.range_test["steps"] == test.steps
    assert tuned.config["lr"] == test.suggestion()
    assert tuned.cost["images"] == plain.cost["images"]  # the test's images came out of the run
    assert tuned.history[-1]["step"] == plain.history[-1]["step"] - test.steps
    # The named schedule is rebuilt at the new peak: the same run by hand gives the same model.
    by_hand = train_run(digits, dataclasses.replace(config, lr=test.suggestion()),
                        (plain.history[-1]["step"] - test.steps) / (len(digits.y_train) // 32),
                        schedule=named_schedule("onecycle", test.suggestion()), progress=False)
    assert by_hand.val == tuned.val
    assert plain.range_test is None


def test_a_range_test_peak_is_refused_where_it_cannot_apply(digits):
    from policysearch.policies.hypergradient import Hypergradient

    config = TrainConfig(model="mlp", batch_size=32)
    with pytest.raises(ConfigError, match="online"):
        train_run(digits, config, 4, schedule=Hypergradient(config.lr), progress=False, peak="range-test")
    with pytest.raises(ConfigError, match="over half"):
        train_run(digits, config, 2, progress=False, peak="range-test")
    with pytest.raises(ConfigError):
        train_run(digits, config, 1, progress=False, peak="tuned")


def test_schedule_space_keeps_its_peak_source_and_old_files_load():
    from policysearch.errors import PolicyFormatError
    from policysearch.policies.schedule_space import ScheduleSpace

    space = ScheduleSpace(segments=6, base="onecycle", scale=2.0, peak="range-test", range_steps=30)
    assert ScheduleSpace.from_dict(space.to_dict()) == space
    default = ScheduleSpace(segments=6, base="onecycle")
    assert "peak" not in default.to_dict()  # files of default-peak controllers are unchanged
    assert ScheduleSpace.from_dict(default.to_dict()).peak == "default"
    with pytest.raises(ConfigError, match="base"):
        ScheduleSpace(peak="range-test")
    with pytest.raises(PolicyFormatError):
        ScheduleSpace.from_dict({**space.to_dict(), "peak": "tuned"})


def test_env_bases_each_episode_on_its_range_test_and_charges_it(digits):
    import gymnasium as gym
    import numpy as np
    import torch

    import policysearch  # noqa: F401  (registers the envs)
    from policysearch.policies.schedule import named_schedule

    def make(peak):
        return gym.make("policysearch/Schedule-v1", data=digits, model="mlp", episode_length=2, steps_per_segment=6,
                        batch_size=32, child_seed=2, peak=peak, range_steps=8)

    env, plain = make("range-test"), make("default")
    info = env.reset(seed=0)[1]
    plain.reset(seed=0)
    config = env.unwrapped.trainer.config
    test = lr_range_test(digits, config, steps=8)
    assert info["peak_lr"] == test.suggestion() != config.lr
    centre = np.zeros(1, dtype=np.float32)
    first = env.step(centre)[-1]
    assert first["lr"] == named_schedule("onecycle", test.suggestion()).lr_at(0.0)
    flops = env.unwrapped.trainer.train_flops_per_image
    assert first["train_flops"] == pytest.approx((6 + 8) * 32 * flops)
    assert plain.step(centre)[-1]["train_flops"] == pytest.approx(6 * 32 * flops)
    # A saved state continues on the episode's peak.
    state = env.unwrapped.get_state()
    other = make("range-test")
    other.reset(seed=5)
    other.unwrapped.set_state(state)
    a, b = env.step(centre), other.step(centre)
    assert a[-1]["lr"] == b[-1]["lr"] and a[1] == b[1]
    assert all(torch.equal(p, q) for p, q in zip(env.unwrapped.trainer.model.parameters(),
                                                 other.unwrapped.trainer.model.parameters()))


def test_cli_refuses_a_range_test_peak_without_a_base(capsys, tmp_path):
    from policysearch.cli import main

    code = main(["schedule", "--dataset", "digits", "--base", "none", "--peak", "range-test",
                 "--out", str(tmp_path / "r"), "--no-progress"])
    assert code != 0 and "--peak" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_train_with_a_range_test_peak_reports_it(capsys):
    import json

    from policysearch.cli import main

    code = main(["train", "--dataset", "digits", "--model", "mlp", "--schedule", "onecycle", "--peak", "range-test",
                 "--epochs", "4", "--no-progress", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert record["range_test"]["steps"] == 20 and record["config"]["lr"] == record["range_test"]["peak_lr"]
