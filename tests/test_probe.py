"""Controller `probe`: the probe policy (probe at the base, one decision, hold), the fit to a gain table
and its cross-validation, and a real Schedule-v1 search whose exported controller drives a plain run."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from policysearch.contrib.probe import (
    FEATURES,
    ProbeController,
    ProbeFit,
    cross_validate,
    interpolated_gain,
    one_standard_error_choice,
    task_group,
)
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.policies.probe_policy import ProbePolicy, decision_index
from policysearch.policies.schedule_space import RESIDUAL_OBSERVATION_NAMES
from policysearch.search import Budget, run_search

DIM = len(RESIDUAL_OBSERVATION_NAMES)
OBS = spaces.Box(-10.0, 10.0, shape=(DIM,), dtype=np.float32)
ACT = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
LEFT, LAST = RESIDUAL_OBSERVATION_NAMES.index("segments_left"), RESIDUAL_OBSERVATION_NAMES.index("lr_factor")
LOSS = RESIDUAL_OBSERVATION_NAMES.index("val_loss")


def _obs(segments_left: float, last_action: float = 0.0, val_loss: float = 0.0) -> np.ndarray:
    obs = np.zeros(DIM, dtype=np.float32)
    obs[LEFT], obs[LAST], obs[LOSS] = segments_left, last_action, val_loss
    return obs


def test_probe_policy_probes_at_the_base_decides_once_and_holds() -> None:
    weights = np.zeros((1, DIM + 1))
    weights[0, LOSS], weights[0, -1] = 2.0, 0.1
    policy = ProbePolicy(weights, OBS, ACT, segments=6, probe=1)
    assert decision_index(_obs(1.0), 6) == 0 and decision_index(_obs(5 / 6), 6) == 1
    assert policy.act(_obs(1.0, val_loss=3.0))[0] == 0.0  # the probe: the base schedule whatever the stats
    decided = policy.act(_obs(5 / 6, val_loss=0.2))[0]
    assert decided == pytest.approx(math.tanh(0.5), abs=1e-6)
    # later decisions repeat the last action exactly, whatever the statistics say now
    for left in (4 / 6, 3 / 6, 1 / 6):
        assert policy.act(_obs(left, last_action=decided, val_loss=-5.0))[0] == decided
    # the decision reads the observation clipped to the fitted range: beyond it, the edge's decision
    low, high = np.full(DIM, -10.0), np.full(DIM, 10.0)
    low[LOSS], high[LOSS] = -0.5, 0.2
    clipped = ProbePolicy(weights, OBS, ACT, segments=6, low=low, high=high)
    assert clipped.act(_obs(5 / 6, val_loss=3.0))[0] == pytest.approx(math.tanh(0.5), abs=1e-6)
    assert clipped.act(_obs(5 / 6, val_loss=-3.0))[0] == pytest.approx(math.tanh(-0.9), abs=1e-6)
    assert clipped.act(_obs(5 / 6, val_loss=0.1))[0] == pytest.approx(math.tanh(0.3), abs=1e-6)
    two = ProbePolicy(weights, OBS, ACT, segments=6, probe=2)
    assert two.act(_obs(5 / 6, val_loss=0.2))[0] == 0.0 and two.act(_obs(4 / 6, val_loss=0.2))[0] == decided


def test_probe_policy_refuses_bad_settings_and_round_trips(tmp_path) -> None:
    with pytest.raises(ConfigError, match="residual observation"):
        ProbePolicy(np.zeros((1, 4)), spaces.Box(-1, 1, (3,)), ACT, segments=6)
    with pytest.raises(ConfigError, match="no decision"):
        ProbePolicy(np.zeros((1, DIM + 1)), OBS, ACT, segments=3, probe=3)
    with pytest.raises(ConfigError, match="segments"):
        ProbePolicy(np.zeros((1, DIM + 1)), OBS, ACT, segments=1)
    with pytest.raises(ConfigError, match="low above high"):
        ProbePolicy(np.zeros((1, DIM + 1)), OBS, ACT, segments=4, low=np.ones(DIM), high=np.zeros(DIM))
    with pytest.raises(ConfigError, match="finite"):
        ProbePolicy(np.zeros((1, DIM + 1)), OBS, ACT, segments=4, low=[0.0] * 3)
    low = np.linspace(-2, -1, DIM)
    policy = ProbePolicy(np.linspace(-1, 1, DIM + 1).reshape(1, -1), OBS, ACT, segments=4, probe=1, low=low)
    path = policy.save(tmp_path / "p.json")
    loaded = ProbePolicy.load(path, OBS, ACT)
    assert np.array_equal(loaded.weights, policy.weights) and (loaded.segments, loaded.probe) == (4, 1)
    assert np.array_equal(loaded.low, low) and np.array_equal(loaded.high, np.full(DIM, 10.0))
    data = json.loads(path.read_text())
    del data["segments"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(PolicyFormatError, match="segments"):
        ProbePolicy.load(tmp_path / "bad.json", OBS, ACT)
    data["segments"], data["probe"] = 4, 9
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(PolicyFormatError, match="no decision"):
        ProbePolicy.load(tmp_path / "bad.json", OBS, ACT)


def test_interpolated_gain_is_exact_on_the_grid_and_linear_between() -> None:
    grid = np.linspace(-1, 1, 5)
    gains = np.array([[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 0.0, 0.0, 0.0, -4.0]])
    assert interpolated_gain(np.array([-0.5, 1.0]), gains, grid) == pytest.approx([1.0, -4.0])
    assert interpolated_gain(np.array([0.25, -0.75]), gains, grid) == pytest.approx([2.5, 2.0])
    assert interpolated_gain(np.array([7.0, -7.0]), gains, grid) == pytest.approx([4.0, 4.0])  # clipped


def _table(n: int, rng: np.random.Generator, carries_over: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Tasks in 4 groups; each task's best action is +0.8 or -0.8. With `carries_over` a feature says which in
    every group; otherwise the sign of the best action is the group's and the feature is noise."""
    grid = np.linspace(-1, 1, 5)
    groups = [f"g{i % 4}" for i in range(n)]
    features = rng.normal(size=(n, len(FEATURES)))
    if carries_over:
        target = 0.8 * np.sign(features[:, 0])
    else:
        target = np.array([0.8 if g in ("g0", "g1") else -0.8 for g in groups])
    gains = -((grid[None, :] - target[:, None]) ** 2) * 10.0
    gains -= gains[:, [2]]  # gains over action 0
    return features, gains, groups


def test_the_fit_learns_a_decision_that_features_carry_and_folds_into_raw_weights() -> None:
    rng = np.random.default_rng(0)
    features, gains, _ = _table(80, rng, carries_over=True)
    grid = np.linspace(-1, 1, 5)
    fit = ProbeFit(features, gains, grid, penalty=0.0, seed=0)
    constant = ProbeFit(features, gains, grid, penalty=math.inf, seed=0)
    assert np.all(constant.weights == 0.0)
    assert fit.value(features, gains) > constant.value(features, gains) + 3.0
    # the fitted actions follow the feature's sign
    actions = fit.actions(features)
    assert np.mean(np.sign(actions) == np.sign(features[:, 0])) > 0.9
    # the raw weights (standardisation folded in) give the same action through a ProbePolicy
    policy = ProbePolicy(fit.raw_weights(), OBS, ACT, segments=6)
    for row, action in zip(features[:5], actions[:5]):
        obs = np.zeros(DIM)
        for k, name in enumerate(FEATURES):
            obs[RESIDUAL_OBSERVATION_NAMES.index(name)] = row[k]
        obs[LEFT] = 5 / 6
        assert policy.act(obs)[0] == pytest.approx(action, abs=1e-5)


def test_cross_validation_keeps_features_only_where_they_carry_over_groups() -> None:
    grid = np.linspace(-1, 1, 5)
    carried = cross_validate(*_table(80, np.random.default_rng(1), carries_over=True), grid, penalties=(0.1, math.inf))
    assert carried[0]["value"] > carried[1]["value"] + 3.0
    assert set(carried[0]["per_group"]) == {"g0", "g1", "g2", "g3"}
    # a group-specific answer the features do not predict: on unseen groups every fit loses to the base (gain < 0),
    # which the in-sample value of the same table would hide
    table = _table(80, np.random.default_rng(2), carries_over=False)
    local = cross_validate(*table, grid, penalties=(0.1, math.inf))
    assert max(c["value"] for c in local) < 0.0
    assert ProbeFit(table[0], table[1], grid, penalty=math.inf).value(table[0], table[1]) >= 0.0


def test_the_one_standard_error_rule_takes_the_simplest_policy_the_folds_cannot_tell_from_the_best() -> None:
    def cv(penalty, values):
        return {"penalty": penalty, "value": float(np.mean(values)), "per_group": dict(enumerate(values))}

    # 0.1 is best; 1.0 is worse by 0.1 on average with fold differences spread far wider: within one error
    noisy = [cv(0.0, [1.0, 2.0, 0.0]), cv(0.1, [1.2, 2.1, 0.3]), cv(1.0, [0.5, 2.5, 0.3]), cv(math.inf, [0, 0, 0])]
    assert one_standard_error_choice(noisy) == 1.0
    # the same means, the differences consistent fold by fold: the best stays
    steady = [cv(0.1, [1.0, 1.0, 1.0]), cv(1.0, [0.9, 0.9, 0.91]), cv(math.inf, [0.0, 0.0, 0.0])]
    assert one_standard_error_choice(steady) == 0.1
    assert one_standard_error_choice([cv(math.inf, [0.5, 0.5]), cv(0.0, [0.1, 0.2])]) == math.inf


def test_task_groups_are_data_set_and_model_pairs() -> None:
    assert task_group("fashion-mnist/2000 cnn 4ep bs128 wd0.0005") == "fashion-mnist cnn"
    assert task_group("digits mlp 3ep bs64 wd0") == "digits mlp"
    assert task_group(None) == "task"


def test_probe_refuses_bad_settings_and_an_absolute_env(digits) -> None:
    with pytest.raises(ConfigError, match="odd"):
        ProbeController(grid=4)
    with pytest.raises(ConfigError, match="at least 1"):
        ProbeController(probe=0)
    env = gym.make("policysearch/Schedule-v1", data=digits, model="mlp", episode_length=2, steps_per_segment=2,
                   batch_size=32, base=None)
    with pytest.raises(ConfigError, match="base schedule"):
        run_search(env, "probe", Budget(child_trainings=5), None, seed=0, progress=False)


def _schedule_env(digits, episode_length: int = 3):
    return gym.make("policysearch/Schedule-v1", data=digits, model="mlp", episode_length=episode_length,
                    steps_per_segment=2, batch_size=32, scale=2.0)


def test_probe_search_tabulates_shared_episodes_and_exports_a_closed_loop_controller(digits, tmp_path) -> None:
    from policysearch.policies.adaptive import AdaptiveSchedule
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    result = run_search(_schedule_env(digits), "probe", Budget(child_trainings=10), tmp_path / "run", seed=0,
                        progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    table = summary["probe"]
    assert summary["files"]["closed_loop"] == "controller.json" and len(table["tasks"]) == 2
    assert table["grid_factors"] == pytest.approx([0.5, 2 ** -0.5, 1.0, 2 ** 0.5, 2.0])
    for k, row in enumerate(table["tasks"]):
        episodes = result.episodes[5 * k:5 * k + 5]
        # one task: every factor from the same seed, the same probe segment, then its own factor held
        assert len({e["child_seed"] for e in episodes}) == 1
        assert len({e["steps"][0]["metric"] for e in episodes}) == 1
        assert [e["steps"][0]["factor"] for e in episodes] == [1.0] * 5
        held = [[s["factor"] for s in e["steps"][1:]] for e in episodes]
        assert [h[0] for h in held] == pytest.approx(table["grid_factors"]) and all(len(set(h)) == 1 for h in held)
        # the row's gains are the returns' differences to the base schedule's, in points
        returns = [sum(s["reward"] for s in e["steps"]) for e in episodes]
        assert row["gains"] == pytest.approx([100 * (r - returns[2]) for r in returns], abs=1e-4)
    assert {c["penalty"] for c in table["cross_validation"]} >= {0.0, "inf"}
    assert len(table["cross_validation_by_pair"]) == len(table["cross_validation"])
    adaptive = AdaptiveSchedule.load(tmp_path / "run" / "controller.json")
    assert adaptive.algo == "probe" and adaptive.model.segments == 3
    # the decision's clip range is the table's range of each feature it reads
    for name in FEATURES:
        seen = [row["features"][name] for row in table["tasks"]]
        i = RESIDUAL_OBSERVATION_NAMES.index(name)
        assert (adaptive.model.low[i], adaptive.model.high[i]) == pytest.approx((min(seen), max(seen)))
    run = train_run(digits, TrainConfig(model="mlp", batch_size=32, seed=0), 1, schedule=adaptive, progress=False)
    factors = [h["factor"] for h in run.history]
    assert len(factors) == 3 and factors[0] == 1.0 and factors[1] == factors[2] and 0.5 <= factors[1] <= 2.0


def test_a_probe_sidecar_for_another_number_of_segments_is_refused(digits, tmp_path) -> None:
    from policysearch.policies.adaptive import AdaptiveSchedule

    run_search(_schedule_env(digits), "probe", Budget(child_trainings=10), tmp_path / "run", seed=0, progress=False)
    weights = tmp_path / "run" / "controller.weights.json"
    data = json.loads(weights.read_text())
    data["segments"] = 4
    weights.write_text(json.dumps(data))
    with pytest.raises(PolicyFormatError, match="segments"):
        AdaptiveSchedule.load(tmp_path / "run" / "controller.json")


@pytest.mark.parametrize("crash_at", [7, 20])  # in the first task's table row, and in the second's
def test_probe_resumes_after_a_crash_like_an_uninterrupted_run(digits, tmp_path, crash_at) -> None:
    from search_helpers import stable
    from test_resume import Crash, CrashAt

    budget, kwargs = Budget(child_trainings=10), {"seed": 3, "progress": False}
    whole = run_search(_schedule_env(digits), "probe", budget, tmp_path / "whole", **kwargs)
    with pytest.raises(Crash):
        run_search(CrashAt(_schedule_env(digits), crash_at), "probe", budget, tmp_path / "cut", **kwargs)
    resumed = run_search(_schedule_env(digits), "probe", budget, tmp_path / "cut", resume=True, **kwargs)
    assert stable(resumed.episodes) == stable(whole.episodes)
    assert resumed.summary["probe"] == whole.summary["probe"]
    assert (tmp_path / "cut" / "controller.weights.json").read_text() == \
        (tmp_path / "whole" / "controller.weights.json").read_text()


def test_cli_probe_trains_and_its_controller_drives_train(capsys, tmp_path) -> None:
    from policysearch.cli import main

    out = tmp_path / "probe"
    argv = ["schedule", "--search-only",
            "--dataset", "digits", "--train-size", "300", "--model", "mlp", "--controller", "probe",
            "--budget", "10", "--episode-length", "2", "--steps-per-segment", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["probe"]["tasks"]) == 2 and summary["files"]["controller"] == "controller.weights.json"
    assert main(["train", "--dataset", "digits", "--train-size", "300", "--epochs", "1", "--model", "mlp",
                 "--no-progress", "--schedule", str(out / "controller.json")]) == 0
    capsys.readouterr()
    code = main(["schedule", "--dataset", "digits", "--controller", "probe", "--base", "none", "--budget", "5",
                 "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "base schedule" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before the run folder was made
