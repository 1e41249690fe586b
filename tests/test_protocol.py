"""The protocol as the product (policysearch.protocol): search, re-rank with the baselines on validation,
compare on the test split over paired seeds, export the best of {searched, baselines}, say which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from policysearch.errors import ConfigError
from policysearch.protocol.core import Arm, verdict_line
from policysearch.protocol.effort import EFFORTS, PLANS, plan_for

TINY = dict(epochs=2, controller="random", budget=2, top=1, rerank_seeds=1, seeds=2, segments=2, progress=False)


@pytest.fixture(scope="module")
def small(digits):
    """Digits with 200 training images: a protocol run of a few dozen tiny trainings."""
    from policysearch.data import prepare

    return prepare("digits", train_size=200, val_size=100, seed=0, device="cpu")


def test_effort_presets_and_overrides():
    assert set(PLANS) == {"augment", "schedule", "compress"} and EFFORTS == ("quick", "standard", "thorough")
    standard = plan_for("augment")
    assert (standard.controller, standard.budget, standard.top, standard.rerank_seeds, standard.seeds) == \
        ("tpe", 4, 3, 1, 5)  # the headroom benchmark's protocol
    assert standard.finalist_seeds == 6 and plan_for("compress").finalist_seeds == 2  # the seeds' scatter
    assert plan_for("augment", "quick", budget=9, top=None).budget == 9
    for job in PLANS:
        budgets = [plan_for(job, e).seeds for e in EFFORTS]
        assert budgets == sorted(budgets)  # more effort, never fewer seeds
    with pytest.raises(ConfigError, match="effort"):
        plan_for("augment", "heroic")
    # The held-out decision's finalists never train on fewer seeds than the re-ranking.
    assert plan_for("compress", rerank_seeds=4).finalist_seeds == 4
    assert plan_for("augment", rerank_seeds=2, decision_seeds=5).finalist_seeds == 5
    assert plan_for("augment", rerank_seeds=3, decision_seeds=1).finalist_seeds == 3
    with pytest.raises(ConfigError, match="decision seeds"):
        plan_for("augment", decision_seeds=0)
    # The held-out decision's bar: 80 % of the resamples for augment and schedule, the 95 % CI for compress.
    assert {plan_for(job, e).decision_confidence for job in ("augment", "schedule") for e in EFFORTS} == {0.8}
    assert plan_for("compress").decision_confidence is None
    assert plan_for("schedule", decision_confidence=0.975).decision_confidence == 0.975
    for bad in (0.4, 1.0):
        with pytest.raises(ConfigError, match="decision confidence"):
            plan_for("augment", decision_confidence=bad)


def test_find_augmentation_exports_the_choice_with_its_verdict_and_resumes(small, tmp_path, monkeypatch):
    from policysearch import find_augmentation
    from policysearch.policies import load_policy

    said = []
    result = find_augmentation(small, "mlp", baselines=("none", "erasing"), out=tmp_path / "run", say=said.append,
                               **TINY)
    assert any(line.startswith("augment: random searches 2 children of 2 epochs") for line in said)  # the estimate
    assert result.chosen in ("learned", "none", "erasing") and result.verdict["line"]
    arms = [r["arm"] for r in result.ranking]
    assert arms == ["learned", "none", "erasing"] and sum(r["chosen"] for r in result.ranking) == 1
    table = result.comparison["arms"]
    assert set(table) == {"learned", "none", "erasing"} and all(len(a["per_seed"]) == 2 for a in table.values())
    # Re-ranking and comparison use seeds apart from each other and from the search.
    assert set(result.ranking[0]["seeds"]).isdisjoint(result.comparison["seeds"])
    saved = json.loads((tmp_path / "run" / "protocol.json").read_text())
    assert saved["verdict"]["line"] == result.verdict["line"] and saved["chosen"] == result.chosen
    policy = load_policy(tmp_path / "run" / "policy.json")
    assert policy.provenance["protocol"]["chosen"] == result.chosen
    assert policy.provenance["protocol"]["validation"] == {r["arm"]: r["val_mean"] for r in result.ranking}
    assert (tmp_path / "run" / "trainings.jsonl").is_file()
    # A resumed protocol trains nothing it has: every training is read back from the ledger.
    import policysearch.protocol.trainings as trainings

    monkeypatch.setattr(trainings, "_train", lambda *a: pytest.fail("trained again on resume"))
    again = find_augmentation(small, "mlp", baselines=("none", "erasing"), out=tmp_path / "run", resume=True,
                              say=said.append, **TINY)
    assert again.verdict == result.verdict and again.comparison == result.comparison


def test_a_baseline_the_search_cannot_beat_on_validation_is_exported_and_said(small, monkeypatch):
    import policysearch.protocol.core as core
    from policysearch import find_augmentation
    from policysearch.policies.augment import AugmentPolicy

    real = core.reward_value

    def favour_erasing(metrics, metric):  # a rigged validation: erasing's runs score best
        return real(metrics, metric) + (1.0 if metrics.get("_arm") == "erasing" else 0.0)

    import policysearch.protocol.trainings as trainings

    real_train = trainings._train

    def tagged(data, config, epochs, job, held=None):
        out = real_train(data, config, epochs, job, held)
        out["val"] = {**out["val"], "_arm": job.arm}
        return out

    monkeypatch.setattr(trainings, "_train", tagged)
    monkeypatch.setattr(core, "reward_value", favour_erasing)
    # held_out=0: the validation mean alone decides (the held-out decision is tested in test_selection.py)
    result = find_augmentation(small, "mlp", baselines=("none", "erasing"), compare=False, say=lambda line: None,
                               held_out=0, **TINY)
    assert result.chosen == "erasing" and result.verdict["line"].startswith("keep erasing: the search did not beat it")
    assert isinstance(result.artefact, AugmentPolicy) and result.artefact.erasing > 0
    assert result.artefact.provenance["protocol"]["searched"] is False and result.comparison is None


def test_find_schedule_exports_an_open_loop_schedule_and_compares_with_onecycle(small, tmp_path):
    from policysearch import find_schedule
    from policysearch.policies.schedule import LearnedSchedule

    result = find_schedule(small, "mlp", baselines=("onecycle", "linear"), out=tmp_path / "s", say=lambda line: None,
                           **{**TINY, "segments": 1})
    assert isinstance(result.artefact, LearnedSchedule)
    assert set(result.comparison["arms"]) == {"learned", "onecycle", "linear"}  # learned shown, chosen or not
    assert (tmp_path / "s" / "schedule.json").is_file() and LearnedSchedule.load(tmp_path / "s" / "schedule.json")


def test_compress_model_keeps_uniform_unless_the_search_beats_it(small, tmp_path):
    pytest.importorskip("torch_pruning")
    from policysearch import compress_model
    from policysearch.models import build_model
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    teacher = train_run(small, TrainConfig(model="cnn", batch_size=32), 2, progress=False).model
    kept = compress_model(teacher, small, controller="uniform", finetune_epochs=0.5, batch_size=32, seeds=2,
                          out=tmp_path / "u", say=lambda line: None)
    assert kept.chosen == "uniform" and kept.verdict["line"].startswith("keep uniform pruning at 0.5")
    assert (tmp_path / "u" / "plan.json").is_file() and (tmp_path / "u" / "model.pt").is_file()
    assert kept.artefact.flops_fraction <= 0.5
    searched = compress_model(teacher, small, effort="quick", compass={"steps": 5, "rounds": 1},
                              finetune_epochs=0.5, batch_size=32, seeds=2, say=lambda line: None)
    assert searched.chosen in ("uniform", "searched") and searched.verdict["line"]
    if searched.chosen == "searched":  # then it was compared with uniform on paired test seeds
        assert searched.comparison["differences"]["uniform"]["n"] == 2
    with pytest.raises(ConfigError, match="plan searcher"):
        compress_model(teacher, small, controller="ppo", say=lambda line: None)
    with pytest.raises(ConfigError, match="cannot take images of shape"):
        compress_model(build_model("cnn", (3, 8, 8), 10), small, say=lambda line: None)


def test_the_verdict_names_the_strongest_baseline_with_its_interval():
    learned = Arm("learned", None, None, searched=True, artefact=None)
    rows = [{"arm": "learned", "searched": True, "val_mean": 0.9}, {"arm": "none", "searched": False, "val_mean": 0.8}]
    comparison = {"metric": "accuracy", "seeds": [1, 2, 3, 4, 5],
                  "arms": {"learned": {"mean": 0.9}, "none": {"mean": 0.8}, "erasing": {"mean": 0.85}},
                  "differences": {"none": {"mean": 10.0, "low": 8.0, "high": 12.0, "n": 5},
                                  "erasing": {"mean": 5.0, "low": 2.0, "high": 8.0, "n": 5}}}
    v = verdict_line(learned, comparison, rows)
    assert v["line"] == ("learned beats every baseline; the strongest, erasing, by +5.00 [+2.00, +8.00] points of "
                         "test accuracy over 5 paired seeds") and v["beats_every_baseline"]
    comparison["differences"]["erasing"] = {"mean": 0.5, "low": -0.5, "high": 1.5, "n": 5}
    assert "not resolved" in verdict_line(learned, comparison, rows)["line"]
    # the strongest on test resolved, a weaker one not: the line names the unresolved one, not the strongest
    comparison["differences"]["erasing"] = {"mean": 5.0, "low": 2.0, "high": 8.0, "n": 5}
    comparison["differences"]["none"] = {"mean": 3.0, "low": -0.5, "high": 6.0, "n": 5}
    v = verdict_line(learned, comparison, rows)
    assert "against none on test it is not resolved: +3.00 [-0.50, +6.00]" in v["line"]
    assert v["named_baseline"] == "none" and v["strongest_baseline"] == "erasing" and not v["beats_every_baseline"]
    comparison["differences"]["none"] = {"mean": 10.0, "low": 8.0, "high": 12.0, "n": 5}
    comparison["differences"]["erasing"] = {"mean": -2.0, "low": -3.0, "high": -1.0, "n": 5}
    assert "loses to erasing" in verdict_line(learned, comparison, rows)["line"]
    kept = verdict_line(Arm("none", None, None, searched=False, artefact=None), None, rows)
    assert kept["line"].startswith("keep none: the search did not beat it on validation (the best searched")


def test_the_cli_runs_the_protocol_by_default_and_the_search_alone_on_request(tmp_path, capsys):
    from policysearch.cli import main

    base = ["--dataset", "digits", "--train-size", "200", "--model", "mlp", "--batch-size", "32", "--no-progress"]
    code = main(["augment", *base, "--controller", "random", "--budget", "2", "--epochs", "2", "--top", "1",
                 "--seeds", "2", "--baselines", "none,erasing", "--out", str(tmp_path / "a"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    assert record["verdict"]["line"] in err and "trainings, about" in err  # the estimate, before any search
    for name in ("policy.json", "protocol.json", "trainings.jsonl", "search/episodes.jsonl"):
        assert (tmp_path / "a" / name).is_file(), name
    code = main(["augment", "--search-only", *base, "--controller", "random", "--budget", "1", "--episode-length",
                 "1", "--out", str(tmp_path / "b")])
    assert code == 0 and (tmp_path / "b" / "episodes.jsonl").is_file()
    assert not (tmp_path / "b" / "protocol.json").exists()
    capsys.readouterr()
    code = main(["augment", *base, "--steps-per-segment", "2", "--out", str(tmp_path / "c")])
    assert code == 2 and "--search-only" in capsys.readouterr().err
    code = main(["schedule", *base, "--lr", "0.1", "--out", str(tmp_path / "d")])
    assert code == 2 and "--lr" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_the_policy_a_protocol_exports_trains_in_a_plain_run(small, tmp_path):
    from policysearch import find_augmentation
    from policysearch.policies import load_policy
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    find_augmentation(small, "mlp", baselines=("none",), compare=False, out=tmp_path / "p", say=lambda line: None,
                      **TINY)
    policy = load_policy(str(tmp_path / "p" / "policy.json"))
    result = train_run(small, TrainConfig(model="mlp", batch_size=32), 1, policy, progress=False)
    assert 0.0 <= result.test["accuracy"] <= 1.0 and torch.isfinite(torch.tensor(result.val["nll"]))
    assert Path(tmp_path / "p" / "protocol.json").is_file()


def test_the_ledger_in_worker_processes_saves_each_training_and_matches_one_process(small, tmp_path):
    from policysearch.policies import load_policy
    from policysearch.protocol.trainings import Job, Ledger
    from policysearch.train.trainer import TrainConfig

    config = TrainConfig(model="mlp", seed=0)
    jobs = [Job(name, load_policy(name), None, seed, test=False) for name in ("none", "erasing") for seed in (1, 2)]
    here = Ledger(None, small, config, epochs=1).run(jobs, "here")
    said = []
    ledger = Ledger(tmp_path, small, config, epochs=1, workers=2, progress=said.append)
    there = ledger.run(jobs, "there")
    # Same seeds, same figures, in the order asked, whichever process trained them and whenever it finished.
    assert [(r["arm"], r["seed"], r["val"]) for r in there] == [(r["arm"], r["seed"], r["val"]) for r in here]
    lines = (tmp_path / "trainings.jsonl").read_text().splitlines()
    assert len(lines) == len(jobs) and said[-1] == "there: 4 of 4 trainings done"
    # Read back, not trained again.
    assert Ledger(tmp_path, small, config, epochs=1).run(jobs, "again") == there


def test_the_paired_comparison_signs_differences_for_the_chosen_arm():
    from policysearch.protocol.core import paired_comparison

    values = {"learned": [0.90, 0.92, 0.91], "none": [0.88, 0.90, 0.89], "trivial": [0.91, float("nan"), 0.90]}
    table = paired_comparison(values, "learned", [1, 2, 3], "accuracy", {"learned"})
    d = table["differences"]["none"]
    assert d["mean"] == pytest.approx(2.0) and d["low"] > 0 and d["n"] == 3  # points, chosen minus the other
    assert table["differences"]["trivial"] is None and "learned" not in table["differences"]  # a diverged seed
    assert table["arms"]["learned"]["searched"] and not table["arms"]["none"]["searched"]
    losses = paired_comparison({"a": [0.3, 0.4], "b": [0.5, 0.6]}, "a", [1, 2], "nll", {"a"})
    assert losses["differences"]["b"]["mean"] == pytest.approx(20.0)  # a lower loss favours the chosen arm


def test_a_lower_is_better_metric_keeps_its_interval_in_order():
    from policysearch.protocol.core import paired_comparison

    values = {"learned": [0.30, 0.31, 0.29, 0.33, 0.30], "none": [0.31, 0.30, 0.31, 0.32, 0.31]}
    d = paired_comparison(values, "learned", [1, 2, 3, 4, 5], "nll", {"learned"})["differences"]["none"]
    assert d["low"] <= d["mean"] <= d["high"] and d["low"] < 0 < d["high"]  # not resolved, whatever the sign
    learned = Arm("learned", None, None, searched=True, artefact=None)
    comparison = paired_comparison(values, "learned", [1, 2, 3, 4, 5], "nll", {"learned"})
    assert "not resolved" in verdict_line(learned, comparison, [])["line"]
