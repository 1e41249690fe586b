"""Multi-objective search: the Pareto function on hand-made points, objectives, a multi-objective
TPE study stored in the run folder's optuna.db, and the post-hoc front of any controller."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import pytest

from policysearch.cli import main
from policysearch.errors import ConfigError, UnknownNameError
from policysearch.search import Budget, run_search
from policysearch.search.pareto import Objective, as_objectives, pareto_front, pareto_summary, parse_objectives

MAX, MIN = "maximize", "minimize"


# ---------------------------------------------------------------------- the function, by hand
def test_front_of_two_maximised_objectives() -> None:
    points = [(1, 5), (2, 4), (3, 3), (2, 2), (1, 1), (3, 1)]
    assert pareto_front(points, [MAX, MAX]) == [0, 1, 2]


def test_direction_per_objective() -> None:
    # (accuracy up, TFLOPs down): cheap-and-poor and dear-and-good are both optimal; dear-and-poor is not.
    points = [(0.90, 1.0), (0.95, 3.0), (0.80, 3.0), (0.90, 2.0)]
    assert pareto_front(points, ["max", "min"]) == [0, 1]
    assert pareto_front(points, [MIN, MAX]) == [2]  # as low and as high as the others, strictly in one
    assert pareto_front(points, [MIN, MIN]) == [0, 2]


def test_ties_are_kept_and_equal_in_one_objective_is_dominated_by_better_in_the_other() -> None:
    points = [(1.0, 2.0), (1.0, 2.0), (1.0, 1.0), (0.5, 3.0)]
    assert pareto_front(points, [MAX, MAX]) == [0, 1, 3]  # the two equal points both stay; (1, 1) is beaten by (1, 2)


def test_nan_points_are_never_on_the_front_and_do_not_dominate() -> None:
    points = [(math.nan, 9.0), (1.0, 1.0), (None, 5.0), (0.5, 2.0)]
    assert pareto_front(points, [MAX, MAX]) == [1, 3]


def test_three_objectives_and_the_trivial_cases() -> None:
    points = [(1, 1, 1), (1, 1, 2), (2, 0, 0), (0, 2, 0), (0, 0, 0)]
    assert pareto_front(points, [MAX, MAX, MAX]) == [1, 2, 3]
    assert pareto_front([], [MAX]) == []
    assert pareto_front([(3,), (5,), (5,)], [MAX]) == [1, 2]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected 2"):
        pareto_front([(1, 2, 3)], [MAX, MAX])
    with pytest.raises(ConfigError, match="direction"):
        pareto_front([(1,)], ["up"])


def test_objective_names() -> None:
    assert parse_objectives("accuracy, tflops") == (Objective("accuracy", MAX), Objective("tflops", MIN))
    assert parse_objectives("robust_acc:max,energy:min")[1] == Objective("energy", MIN)
    assert as_objectives(None) == () and as_objectives(["neg_ece"]) == (Objective("neg_ece", MAX),)
    with pytest.raises(UnknownNameError, match="Did you mean 'accuracy'"):
        parse_objectives("acuracy")
    with pytest.raises(ConfigError, match="twice"):
        parse_objectives("accuracy,accuracy")
    with pytest.raises(ConfigError, match="NAME:max"):
        parse_objectives("accuracy:up")


def test_objective_values_of_an_episode_record() -> None:
    record = {"episode": 0, "train_flops": 3e12, "seconds": 2.5, "diverged": None,
              "steps": [{"val": {"accuracy": 0.9, "ece": 0.05}, "flops_fraction": 0.4}]}
    values = {o.name: o.value(record) for o in parse_objectives("accuracy,neg_ece,ece,tflops,seconds,flops_fraction")}
    assert values == {"accuracy": 0.9, "neg_ece": -0.05, "ece": 0.05, "tflops": 3.0, "seconds": 2.5,
                      "flops_fraction": 0.4}
    assert math.isnan(Objective("accuracy", MAX).value({**record, "diverged": "nan loss"}))


def test_summary_sorts_the_front_and_warns_about_an_objective_nobody_reports() -> None:
    episodes = [{"episode": i, "train_flops": f * 1e12, "diverged": None, "steps": [{"val": {"accuracy": a}}]}
                for i, (a, f) in enumerate([(0.8, 1.0), (0.9, 2.0), (0.7, 3.0)])]
    summary = pareto_summary(episodes, parse_objectives("accuracy,tflops"))
    assert [p["episode"] for p in summary["front"]] == [1, 0]  # best accuracy first
    with pytest.warns(UserWarning, match="no episode"):
        assert pareto_summary(episodes, parse_objectives("accuracy,robust:max"))["front"] == []
    for e in episodes:
        e["train_flops"] = 1e12
    with pytest.warns(UserWarning, match="tflops.*trade nothing"):
        assert [p["episode"] for p in pareto_summary(episodes, parse_objectives("accuracy,tflops"))["front"]] == [1]


# ---------------------------------------------------------------------- searches
def _static_env(digits):
    return gym.make("policysearch/Augment-v1", data=digits, model="mlp", mode="static", episode_length=1,
                    steps_per_segment=2, batch_size=32)


def test_multi_objective_tpe_study_in_optuna_db_and_pareto_files(digits, tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from policysearch.policies.augment import load_policy

    out = tmp_path / "run"
    result = run_search(_static_env(digits), "tpe", Budget(child_trainings=4), out, progress=False,
                        objectives="accuracy,neg_ece")
    study = optuna.load_study(study_name="policysearch", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    assert len(study.trials) == 4 and all(len(t.values) == 2 for t in study.trials)
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto == result.summary["pareto"]
    assert result.summary["files"]["pareto"] == "pareto.json" and (out / "pareto.png").is_file()
    assert result.summary["files"]["optuna"] == "optuna.db"
    # Optuna's own front is the logged one: the same values, the same trials.
    ours = sorted(tuple(p["values"].values()) for p in pareto["front"])
    assert ours == sorted(tuple(t.values) for t in study.best_trials)
    for point in pareto["front"]:
        policy = load_policy(out / point["file"])
        assert policy.provenance["episode"] == point["episode"]


def test_a_single_objective_study_is_stored_too(digits, tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    out = tmp_path / "run"
    run_search(_static_env(digits), "tpe", Budget(child_trainings=2), out, progress=False)
    study = optuna.load_study(study_name="policysearch", storage=f"sqlite:///{out / 'optuna.db'}")
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [t.value for t in study.trials] == pytest.approx([e["return"] for e in episodes])
    # A second search in the same folder (--overwrite) starts a fresh study, not a mixed one.
    run_search(_static_env(digits), "tpe", Budget(child_trainings=1), out, progress=False, overwrite=True)
    study = optuna.load_study(study_name="policysearch", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 1


def test_post_hoc_front_for_a_random_search(digits, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = gym.make("policysearch/Augment-v1", data=digits, model="mlp", episode_length=2, steps_per_segment=1,
                   batch_size=32)
    result = run_search(env, "random", Budget(child_trainings=3), out, progress=False, objectives="accuracy,nll")
    front = result.summary["pareto"]["front"]
    assert front and all(set(p["values"]) == {"accuracy", "nll"} for p in front)
    assert all((out / p["file"]).is_file() for p in front)


def test_cmaes_refuses_several_objectives_before_any_work(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    code = main(["augment", "--dataset", "digits", "--controller", "cmaes", "--mode", "static", "--objectives",
                 "accuracy,tflops", "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "CMA-ES optimises one objective" in err
    assert not (tmp_path / "r").exists()


def test_pareto_command_on_an_existing_run(capsys: pytest.CaptureFixture[str], digits, tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = gym.make("policysearch/Augment-v1", data=digits, model="mlp", episode_length=1, steps_per_segment=1,
                   batch_size=32)
    run_search(env, "random", Budget(child_trainings=3), out, progress=False)
    assert main(["pareto", str(out), "--objectives", "accuracy,neg_ece", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 3 and result["front"]
    assert (out / "pareto.json").is_file() and (out / "pareto.png").is_file()


def test_multi_objective_batches_tell_each_trial_its_own_workers_child(digits, tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from policysearch.search.pareto import batch_trial_values

    out = tmp_path / "run"
    result = run_search(_static_env(digits), "tpe", Budget(child_trainings=4), out, progress=False, workers=2,
                        objectives="accuracy,neg_ece")
    study = optuna.load_study(study_name="policysearch", storage=f"sqlite:///{out / 'optuna.db'}")
    told = [v for t in study.trials for v in t.values]
    logged = [v for e in result.episodes for v in (e["steps"][-1]["val"]["accuracy"], -e["steps"][-1]["val"]["ece"])]
    assert told == pytest.approx(logged)  # trial k (worker k % 2) was told the figures of its own child
    assert [e["worker"] for e in result.episodes] == [0, 1, 0, 1]
    records = [{"worker": 1, "diverged": None, "train_flops": 2e12, "steps": [{"val": {"accuracy": 0.5}}]},
               {"worker": 0, "diverged": "nan", "steps": [{}]}]
    assert batch_trial_values(records, 3, parse_objectives("accuracy,tflops")) == [None, [0.5, 2.0], None]
