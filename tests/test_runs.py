"""`policysearch compare RUN...`: two tiny runs tabulated and plotted; partial and torn runs still compare."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import pytest

from policysearch.analysis.runs import best_so_far, compare_runs, rolling_mean
from policysearch.cli import main
from policysearch.search import Budget, run_search


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from policysearch.data import prepare

    data = prepare("digits", val_size=100, train_size=300, seed=0, device="cpu")
    root = tmp_path_factory.mktemp("runs")
    for name, seed, budget in (("a", 0, 3), ("b", 1, 2)):
        env = gym.make("policysearch/Augment-v1", data=data, model="mlp", episode_length=2, steps_per_segment=1,
                       batch_size=32)
        run_search(env, "random", Budget(child_trainings=budget), root / name, seed=seed, progress=False)
    return root / "a", root / "b"


def test_best_so_far_and_rolling_mean() -> None:
    scores = [0.2, -math.inf, 0.5, 0.4, math.nan]
    assert best_so_far(scores) == [0.2, 0.2, 0.5, 0.5, 0.5]
    assert best_so_far([math.nan, 1.0])[0] != best_so_far([math.nan, 1.0])[0]  # NaN before the first score
    assert rolling_mean(scores, 2) == pytest.approx([0.2, 0.2, 0.5, 0.45, 0.4])


def test_compare_two_runs_table_json_and_plot(capsys: pytest.CaptureFixture[str], two_runs, tmp_path: Path) -> None:
    a, b = two_runs
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(a), str(b), "--plot", str(plot), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # --json: stdout holds the object alone, the table goes to stderr
    rows = {Path(r["run"]).name: r for r in result["runs"]}
    summary = json.loads((a / "summary.json").read_text())
    assert rows["a"]["episodes"] == 3 and rows["b"]["episodes"] == 2 and rows["a"]["budget"] == 3
    assert rows["a"]["controller"] == "random" and rows["a"]["status"] == "finished"
    assert rows["a"]["best score"] == pytest.approx(summary["best"]["score"])
    assert rows["a"]["best val metric"] == pytest.approx(summary["best"]["val_metric"])
    assert rows["a"]["TFLOPs"] == pytest.approx(summary["train_flops"] / 1e12)
    assert rows["a"]["child trainings"] == summary["child_trainings"]
    assert result["plot"] == str(plot) and plot.stat().st_size > 0
    assert "| run" in captured.err and "best score" in captured.err


def test_a_partial_run_with_a_torn_last_line_still_compares(two_runs, tmp_path: Path) -> None:
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(two_runs[0], partial)
    (partial / "summary.json").unlink()  # killed before the summary
    with open(partial / "episodes.jsonl", "a") as f:
        f.write('{"episode": 3, "sco')  # and in the middle of an append
    with pytest.warns(UserWarning, match="torn last line"):
        rows, series, notes = compare_runs([partial, two_runs[1]], window=2)
    assert rows[0]["episodes"] == 3 and rows[0]["status"] == "partial" and rows[0]["controller"] == "random"
    assert series[0]["child"] == [1, 2, 3] and len(series[0]["tflops"]) == 3
    assert notes == []


def test_compare_refuses_a_folder_without_episodes_before_plotting(capsys: pytest.CaptureFixture[str],
                                                                  two_runs, tmp_path: Path) -> None:
    code = main(["compare", str(two_runs[0]), str(tmp_path), "--plot", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert code == 2 and "no episodes.jsonl" in err and not (tmp_path / "c.png").exists()
    code = main(["compare", str(two_runs[0]), "--plot", str(tmp_path)])  # a folder
    assert code == 2 and "--plot" in capsys.readouterr().err
