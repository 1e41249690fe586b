"""The augmentation benchmarks' own logic, on a tiny digits regime: re-ranking by a lower-is-better
reward, and the transfer script's pairing with baselines reused from a headroom report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from policysearch.errors import ConfigError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--dataset", "digits", "--train-size", "200", "--epochs", "4", "--seeds", "2"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def headroom(tmp_path_factory) -> Path:
    """A headroom run searching for NLL: 1 random search of 2 children, both re-ranked."""
    out = tmp_path_factory.mktemp("headroom")
    argv = [*TINY, "--baselines", "none", "--controllers", "random", "--population", "2", "--segments", "2",
            "--searches", "1", "--top", "2", "--reward-metric", "neg_nll", "--workers", "1", "--out", str(out)]
    assert _script("augment_headroom").main(argv) == 0
    return out / "report.json"


def test_headroom_reranks_a_lower_is_better_reward_by_its_minimum(headroom):
    row = json.loads(headroom.read_text())["searches"]["random"][0]
    values = row["val_of_candidates"]  # -NLL of each re-trained candidate: the chosen one is the largest
    assert len(values) == 2 and all(v < 0 for v in values)
    assert values[row["chosen_rank_by_search_score"]] == max(values)


def test_transfer_pairs_with_the_reused_baselines_and_resumes(headroom, tmp_path, capsys):
    report = json.loads(headroom.read_text())
    chosen = report["searches"]["random"][0]["policy"]
    transfer = _script("augment_transfer")
    argv = [*TINY, "--policies", chosen, "--baselines", "none", "--baselines-from", str(headroom),
            "--workers", "1", "--out", str(tmp_path)]
    assert transfer.main(argv) == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["baseline_source"] == {"none": str(headroom)}
    assert saved["baseline_per_seed"]["none"] == report["baseline_per_seed"]["none"]
    # Same regime and seeds as the headroom run: the policy's trainings are the same trainings.
    assert saved["policies"][0]["per_seed"] == report["searches"]["random"][0]["per_seed"]
    capsys.readouterr()
    assert transfer.main(argv) == 0  # resumes: nothing left to train
    assert "resuming" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "report.json").read_text())["policies"]) == 1


def test_transfer_trains_the_baselines_of_another_regime(headroom, tmp_path):
    chosen = json.loads(headroom.read_text())["searches"]["random"][0]["policy"]
    argv = [*TINY[:-4], "--epochs", "3", "--seeds", "2", "--policies", chosen, "--baselines", "none",
            "--baselines-from", str(headroom), "--workers", "1", "--out", str(tmp_path)]
    assert _script("augment_transfer").main(argv) == 0
    assert json.loads((tmp_path / "report.json").read_text())["baseline_source"] == {"none": "trained here"}


def test_transfer_refuses_a_pattern_that_matches_nothing(tmp_path):
    with pytest.raises(ConfigError, match="matches no file"):
        _script("augment_transfer").main([*TINY, "--policies", str(tmp_path / "nothing-*.json"),
                                          "--out", str(tmp_path)])
