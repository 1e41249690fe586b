"""Tracking: TensorBoard scalars for every controller and for train / evaluate, an MLflow run with
params, metrics and artefacts, and the missing-extra errors. Tiny searches on digits with an MLP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import pytest

from policysearch.cli import main
from policysearch.errors import MissingExtraError
from policysearch.search import Budget, run_search
from policysearch.tracking import Tracker, Trackers, episode_scalars, flatten, segment_scalars

FAST = ["--dataset", "digits", "--train-size", "300", "--epochs", "2", "--model", "mlp", "--no-progress"]
CHILD_TAGS = {"child/reward", "child/val_metric", "child/train_loss", "child/lr", "child/val/accuracy"}
SEARCH_TAGS = {"search/return", "search/score", "search/best_score", "search/cost_tflops", "search/cost_seconds"}
# MLflow's SQLAlchemy store warns about its own use of SQLAlchemy; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One SQLite store for the module's MLflow tests (creating one costs seconds); one experiment each."""
    pytest.importorskip("mlflow")
    from policysearch.tracking_mlflow import default_uri

    folder = tmp_path_factory.mktemp("mlflow")
    return default_uri(folder), folder / "mlartifacts"


def _env(digits, mode: str = "schedule"):
    return gym.make("policysearch/Augment-v1", data=digits, model="mlp", mode=mode,
                    episode_length=1 if mode == "static" else 2, steps_per_segment=1, batch_size=32)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class Recording(Tracker):
    """Remembers the order of the events it was told about."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_search_start(self, params):
        self.events.append("search_start")

    def on_segment_end(self, step, env_step):
        self.events.append(f"segment {env_step}")

    def on_episode_end(self, record, totals):
        self.events.append(f"episode {totals['child_trainings']}")

    def on_search_end(self, summary):
        self.events.append("search_end")


def test_search_calls_the_tracker_in_order(digits, tmp_path: Path) -> None:
    rec = Recording()
    run_search(_env(digits), "random", Budget(child_trainings=2), tmp_path / "run", progress=False, tracker=rec)
    assert rec.events == ["search_start", "segment 1", "segment 2", "episode 1", "segment 3", "segment 4",
                          "episode 2", "search_end"]


def test_trackers_fan_out_and_skip_none() -> None:
    a, b = Recording(), Recording()
    both = Trackers([a, None, b])
    both.on_search_start({})
    assert a.events == b.events == ["search_start"] and bool(both) and not Trackers()


def test_scalars_are_named_once_for_every_writer() -> None:
    step = {"reward": 0.1, "metric": 0.5, "train_loss": 2.0, "lr": 0.1, "val": {"accuracy": 0.5, "ece": 0.1},
            "knobs": {"op_probability": {"rotate": 0.2}, "crop": 1.0}, "diverged": None, "action": [0.1]}
    assert segment_scalars(step) == {
        "child/reward": 0.1, "child/val_metric": 0.5, "child/train_loss": 2.0, "child/lr": 0.1,
        "child/val/accuracy": 0.5, "child/val/ece": 0.1, "child/knobs/op_probability/rotate": 0.2,
        "child/knobs/crop": 1.0}
    record = {"return": 0.2, "score": float("-inf"), "metric": float("-inf"), "diverged": "nan loss"}
    scalars = episode_scalars(record, {"best_score": 0.5, "train_flops": 2e12, "train_seconds": 3.0})
    assert scalars == {"search/return": 0.2, "search/best_score": 0.5, "search/diverged": 1.0,
                       "search/cost_tflops": 2.0, "search/cost_seconds": 3.0}  # -inf is not a point
    assert flatten({"a": {"b": 1}, "c": 2}, sep=".") == {"a.b": 1, "c": 2}


@pytest.mark.parametrize(("controller", "mode"), [("random", "schedule"), ("ppo", "schedule"), ("tpe", "static")])
def test_tensorboard_has_child_and_search_tags_for_every_controller(digits, tmp_path: Path, controller: str,
                                                                    mode: str) -> None:
    pytest.importorskip("tensorboard")
    if controller == "tpe":
        pytest.importorskip("optuna")
    out = tmp_path / "run"
    run_search(_env(digits, mode), controller, Budget(child_trainings=2), out, progress=False, tensorboard=True)
    scalars = _scalars(out / "tensorboard" / "search")
    assert set(scalars) >= CHILD_TAGS | SEARCH_TAGS
    if mode == "schedule":
        assert any(tag.startswith("child/knobs/op_probability/") for tag in scalars)
    steps = 2 if mode == "static" else 4
    assert [s for s, _ in scalars["child/train_loss"]] == list(range(1, steps + 1))
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    best = scalars["search/best_score"]
    assert [s for s, _ in best] == [1, 2]
    assert best[-1][1] == pytest.approx(max(e["score"] for e in episodes), abs=1e-6)


def test_tensorboard_folder_can_be_given(digits, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run_search(_env(digits), "random", Budget(child_trainings=1), tmp_path / "run", progress=False,
               tensorboard=tmp_path / "tb")
    assert "child/val_metric" in _scalars(tmp_path / "tb" / "search")
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_train_and_evaluate_write_per_epoch_curves(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    assert main(["train", *FAST, "--tensorboard", str(tmp_path / "tb"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["accuracy"] > 0  # --json: stdout is the object
    (run,) = (tmp_path / "tb").iterdir()
    assert run.name.startswith("train-digits-mlp-")
    scalars = _scalars(run)
    assert [s for s, _ in scalars["train/loss"]] == [2, 4]  # two epochs of two optimizer steps
    assert {"train/lr", "val/accuracy", "test/accuracy", "cost/tflops"} <= set(scalars)

    assert main(["evaluate", *FAST, "--augment", "none,cropflip", "--seeds", "1", "--tensorboard",
                 str(tmp_path / "tb2")]) == 0
    (run,) = (tmp_path / "tb2").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["cropflip-cosine-seed0", "none-cosine-seed0"]
    assert "test/accuracy" in _scalars(run / "none-cosine-seed0")


def test_mlflow_run_holds_params_metrics_and_artefacts(digits, tmp_path: Path, mlflow_store) -> None:
    from mlflow import MlflowClient

    from policysearch.tracking_mlflow import MLflowTracker

    out = tmp_path / "run"
    uri, artefacts = mlflow_store
    tracker = MLflowTracker(uri, "policysearch-test", "tiny", artefacts=[out], artifact_location=artefacts)
    run_search(_env(digits), "random", Budget(child_trainings=2), out, progress=False, tracker=tracker, seed=3)
    tracker.close()
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("policysearch-test").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    params = run.data.params
    assert params["controller"] == "random" and params["seed"] == "3" and params["budget.child_trainings"] == "2"
    assert params["env.model"] == "mlp" and params["env.env_id"] == "policysearch/Augment-v1"
    best = client.get_metric_history(run.info.run_id, "search/best_score")
    assert [m.step for m in best] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "child/val_metric")) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["final/best_score"] == pytest.approx(summary["best"]["score"])
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"policy.json", "summary.json", "episodes.jsonl", "search.png"} <= artefacts
    assert not artefacts & {"mlflow.db", "mlartifacts", ".lock"}


def test_cli_mlflow_default_store_in_the_run_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    out = tmp_path / "aug"
    argv = ["augment", "--search-only",
            "--dataset", "digits", "--train-size", "300", "--model", "mlp", "--controller", "random",
            "--budget", "1", "--episode-length", "1", "--steps-per-segment", "1", "--out", str(out), "--no-progress",
            "--mlflow", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["controller"] == "random"
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("policysearch-augment").experiment_id])
    assert run.info.run_name == "aug" and "policy.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_cli_evaluate_mlflow_nests_one_run_per_training(capsys: pytest.CaptureFixture[str], mlflow_store) -> None:
    from mlflow import MlflowClient

    uri = mlflow_store[0]
    assert main(["evaluate", *FAST, "--augment", "none", "--seeds", "2", "--mlflow", uri]) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("policysearch-evaluate").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    assert children == ["none-cosine-seed0", "none-cosine-seed1"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.parametrize(("option", "module"), [("--tensorboard", "tensorboard"), ("--mlflow", "mlflow")])
def test_missing_extra_is_refused_at_parse_time(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, option: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    code = main(["train", *FAST, option, "--save", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"pip install 'policysearch[{module}]'" in err
    assert not (tmp_path / "m.pt").exists()


def test_missing_extra_in_the_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from policysearch.tracking import TensorBoardTracker

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'policysearch\[tensorboard\]'"):
        TensorBoardTracker(tmp_path)
