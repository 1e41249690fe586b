"""The benchmarks' own logic, on tiny digits regimes: re-ranking by a lower-is-better reward, the
augmentation transfer script's pairing with baselines reused from a headroom report, and the
compression benchmark's `final` step (plans of a previous run distilled again)."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import numpy as np
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


# The compress benchmark's search steps train and distil for real (20-125 s each here): `make test-all`.
@pytest.mark.slow
def test_compress_final_step_reproduces_a_search_runs_comparison_and_adds_lengths(tmp_path):
    """`--steps final` rebuilds the plans of a previous run from its benchmark.json and distils them
    again: at the same length its figures are the search run's, bit for bit."""
    from policysearch.policies.compress import CompressionPlan

    compress = _script("compress")
    first = tmp_path / "search"
    assert compress.main(["--quick", "--steps", "search", "--targets", "0.5", "--controllers", "random",
                          "--out", str(first)]) == 0
    before = json.loads((first / "benchmark.json").read_text())["targets"]["0.5"]
    saved = CompressionPlan.load(first / "plan-0.5-random-0.json")
    assert saved.ratios == before["results"]["random#0"]["ratios"]
    again = tmp_path / "final"
    assert compress.main(["--quick", "--steps", "final", "--plans-from", str(first / "benchmark.json"),
                          "--targets", "0.5", "--finetune-epochs", "1,2", "--teacher", str(first / "teacher.pt"),
                          "--jobs", "1", "--out", str(again)]) == 0
    after = json.loads((again / "benchmark.json").read_text())["targets"]["0.5"]
    assert list(after["by_finetune_epochs"]) == ["1", "2"]
    # Each length's comparison is also a figure, and `--steps plot` redraws it from the record alone.
    figures = {again / "final-0.5-1ep.png", again / "final-0.5-2ep.png"}
    assert all(f.stat().st_size > 10_000 for f in figures)
    redrawn = tmp_path / "redrawn"
    assert compress.main(["--steps", "plot", "--plans-from", str(again / "benchmark.json"), "--out", str(redrawn)]) == 0
    assert sorted(p.name for p in redrawn.iterdir()) == sorted(f.name for f in figures)
    one = after["by_finetune_epochs"]["1"]["results"]
    assert {n: r["test_accuracy"] for n, r in one.items()} == {n: r["test_accuracy"]
                                                              for n, r in before["results"].items()}
    assert after["by_finetune_epochs"]["2"]["finetune_steps"] == 2 * after["by_finetune_epochs"]["1"]["finetune_steps"]
    # Every run's per-image correctness is kept, and each comparison has a CI over seeds and images too.
    both = after["by_finetune_epochs"]["1"]["paired_differences"]["random#0 - uniform"]["seeds_and_images"]
    assert both["seeds"] == 2 and both["low"] <= both["mean"] <= both["high"]
    for row in one.values():
        for bits, acc in zip(row["correct_bits"], row["test_accuracy"]):
            correct = np.unpackbits(np.frombuffer(base64.b64decode(bits), dtype=np.uint8))[:both["images"]]
            assert correct.sum() / both["images"] == acc
    plain = after["by_finetune_epochs"]["1"]["paired_differences"]["random#0 - uniform"]
    assert both["mean"] == pytest.approx(plain["mean"])
    # --final-split val scores the same students on validation, under that split's name.
    assert compress.main(["--quick", "--steps", "final", "--plans-from", str(first / "benchmark.json"),
                          "--targets", "0.5", "--finetune-epochs", "1", "--teacher", str(first / "teacher.pt"),
                          "--final-split", "val", "--first-final-seed", "1000", "--out", str(tmp_path / "val")]) == 0
    val = json.loads((tmp_path / "val" / "benchmark.json").read_text())["targets"]["0.5"]
    assert val["split"] == "val" and "teacher_val_accuracy" in val
    assert val["by_finetune_epochs"]["1"]["seeds"] == [1000, 1001]  # e.g. a search's own batch orders
    assert all("val_accuracy" in r and "test_accuracy" not in r for r in val["results"].values())
    assert [r["val_accuracy"] for r in val["results"].values()] != [r["test_accuracy"] for r in one.values()]


# The compress benchmark's search steps train and distil for real (20-125 s each here): `make test-all`.
@pytest.mark.slow
def test_compress_local_step_pits_compass_search_against_random_search_and_reuses_final_runs(tmp_path, monkeypatch):
    """`--steps local`: compass searches from uniform and random search at equal candidates on the same
    batch orders; `--reuse-final` takes identical final runs from a record instead of training them."""
    import policysearch.compression.pruning

    compress = _script("compress")
    first = tmp_path / "local"
    argv = ["--quick", "--steps", "local", "--targets", "0.5", "--local-rounds", "1", "--local-confirm-steps", "6",
            "--searches", "2"]
    assert compress.main([*argv, "--out", str(first)]) == 0
    record = json.loads((first / "benchmark.json").read_text())["targets"]["0.5"]
    local, random = record["searches"]["local"], record["searches"]["random"]
    assert [r["seeds"] for r in local] == [r["seeds"] for r in random] == [[1000, 1001], [1100, 1101]]
    assert [r["confirm_seeds"] for r in local] == [[2000, 2001], [2100, 2101]]
    for one, other in zip(local, random):
        assert one["candidates"] == other["candidates"] == len(other["accuracies"]) > 0
        assert one["moves"] <= 1 and one["distillations"] >= 2 * (1 + one["candidates"])
        assert one["confirm_steps"] == 6 and one["images"] >= one["distillations"] * 5 * 128
    assert set(record["results"]) == {"uniform", "local#0", "local#1", "random#0", "random#1"}
    assert "local#0 - random#0" in record["paired_differences"]
    trained = []
    real = policysearch.compression.pruning.distilled_correct

    def counting(plans, teacher, data, steps, *args, **kwargs):
        trained.append((len(plans), steps))
        return real(plans, teacher, data, steps, *args, **kwargs)

    monkeypatch.setattr(policysearch.compression.pruning, "distilled_correct", counting)
    again = tmp_path / "again"
    assert compress.main([*argv[:-2], "--searches", "1", "--reuse-final", str(first / "benchmark.json"),
                          "--out", str(again)]) == 0
    after = json.loads((again / "benchmark.json").read_text())["targets"]["0.5"]
    # The search found the same plans, so every final run (10 steps; the search's are 5, its confirmations 6)
    # came from the record.
    assert trained and {steps for _, steps in trained} <= {5, 6}
    assert after["results"].keys() == {"uniform", "local#0", "random#0"}
    assert {n: r["test_accuracy"] for n, r in after["results"].items()} == {
        n: record["results"][n]["test_accuracy"] for n in after["results"]}


def test_compress_final_step_needs_an_existing_plans_file(tmp_path):
    compress = _script("compress")
    with pytest.raises(SystemExit):
        compress.main(["--steps", "final", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        compress.main(["--steps", "final", "--plans-from", str(tmp_path / "missing.json"), "--out", str(tmp_path)])


# The compress benchmark's search steps train and distil for real (20-125 s each here): `make test-all`.
@pytest.mark.slow
def test_compress_searches_in_worker_processes_match_serial_ones(tmp_path, monkeypatch):
    """`--jobs 2` runs whole searches side by side: each search keeps its seed and its budget, and finds
    what the serial run finds (adaptive-BN scores up to float rounding between processes)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # spawned workers import the script's module by name
    compress = importlib.import_module("compress")
    argv = ["--quick", "--steps", "search", "--targets", "0.5", "--controllers", "random", "--searches", "2",
            "--finetune-epochs", "1"]
    assert compress.main([*argv, "--out", str(tmp_path / "serial")]) == 0
    teacher = ["--teacher", str(tmp_path / "serial" / "teacher.pt")]
    assert compress.main([*argv, *teacher, "--jobs", "2", "--out", str(tmp_path / "workers")]) == 0
    serial, workers = (json.loads((tmp_path / run / "benchmark.json").read_text())["targets"]["0.5"]["searches"]
                       for run in ("serial", "workers"))
    assert [row["seed"] for row in workers["random"]] == [row["seed"] for row in serial["random"]] == [0, 1]
    for one, other in zip(serial["random"], workers["random"]):
        assert one["episodes"] == other["episodes"] == 6
        assert abs(one["best_proxy"] - other["best_proxy"]) <= 0.03
    assert (tmp_path / "workers" / "plan-0.5-random-1.json").is_file()
    # --first-search 1 runs search 1 alone: the serial run's second search, on the same split and teacher.
    argv[argv.index("--searches") + 1] = "1"
    assert compress.main([*argv, *teacher, "--first-search", "1", "--out", str(tmp_path / "second")]) == 0
    record = json.loads((tmp_path / "second" / "benchmark.json").read_text())
    (second,) = record["targets"]["0.5"]["searches"]["random"]
    assert second["seed"] == 1 and second["best_proxy"] == serial["random"][1]["best_proxy"]
    assert second["rerank"] == serial["random"][1]["rerank"]
    # The re-ranking's batch order is none of the final seeds' (0, 1 here).
    assert record["settings"]["rerank_seed"] == 1000
    # The duel step: each search's best non-uniform candidate against uniform at the final length, on
    # validation; the winner is that search's choice in the final comparison.
    assert compress.main(["--quick", "--steps", "duel", "--plans-from", str(tmp_path / "serial" / "benchmark.json"),
                          "--targets", "0.5", "--finetune-epochs", "1", *teacher, "--out", str(tmp_path / "duel")]) == 0
    duel = json.loads((tmp_path / "duel" / "benchmark.json").read_text())["targets"]["0.5"]
    assert set(duel["duels"]) == {"random#0", "random#1"} and duel["duel_seed"] == 1000
    for k, row in enumerate(serial["random"]):
        match = duel["duels"][f"random#{k}"]
        candidate = next(r for r in row["rerank"] if not r["is_uniform"])
        assert match["ratios"] == candidate["ratios"]
        assert match["kept"] == (match["candidate_val_accuracy"] > match["uniform_val_accuracy"])
        chosen = duel["results"][f"random#{k}"]["ratios"]
        assert chosen == (candidate["ratios"] if match["kept"] else duel["results"]["uniform"]["ratios"])


# The compress benchmark's search steps train and distil for real (20-125 s each here): `make test-all`.
@pytest.mark.slow
def test_compress_neighbours_step_scores_uniform_against_plans_next_to_it(tmp_path):
    """`--steps neighbours`: each group's channels times and divided by the factor, the others refilled
    to the same FLOPs target, all distilled with the validation batch orders and compared with uniform."""
    compress = _script("compress")
    assert compress.main(["--quick", "--steps", "neighbours", "--targets", "0.5", "--finetune-epochs", "1",
                          "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "benchmark.json").read_text())["targets"]["0.5"]
    rows = record["neighbours"]
    uniform = rows.pop("uniform")
    assert record["neighbour_seeds"] == [1000, 1001] and len(uniform["val_accuracy"]) == 2
    assert len(rows) >= len(record["groups"])  # at least one direction per group moves it
    for name, row in rows.items():
        group, _, step = name.rpartition(" ")
        assert group in record["groups"] and step in ("x1.5", "/1.5")
        moved = row["kept"][group] - uniform["kept"][group]
        assert moved > 0 if step.startswith("x") else moved < 0
        assert row["flops_fraction"] <= 0.5
        assert row["minus_uniform"]["mean"] == pytest.approx(row["mean"] - uniform["mean"])
    assert record["neighbours_above_uniform"] == [n for n, r in rows.items() if r["mean"] > uniform["mean"]]
    with pytest.raises(SystemExit):
        compress.main(["--steps", "neighbours", "--neighbour-factor", "1", "--out", str(tmp_path)])


def test_compress_pools_each_controllers_searches_against_uniform_and_random():
    compress = _script("compress")
    finals = {"uniform": [0.90, 0.91, 0.92], "td3#0": [0.91, 0.92, 0.93], "td3#1": [0.905, 0.915, 0.925],
              "random#0": [0.90, 0.90, 0.90], "random#1": [0.89, 0.90, 0.92], "ppo#0": [0.5, 0.5, 0.5]}
    pooled = compress.pooled_differences(finals)
    # One search (ppo) cannot be pooled; random is pooled against uniform only.
    assert set(pooled) == {"td3 (pooled) - uniform", "td3 (pooled) - random (pooled)", "random (pooled) - uniform"}
    assert pooled["td3 (pooled) - uniform"]["mean"] == pytest.approx(0.0075)
    assert pooled["td3 (pooled) - random (pooled)"]["mean"] == pytest.approx((0.03 + 0.065) / 6)
    assert pooled["random (pooled) - uniform"]["high"] < 0 < pooled["td3 (pooled) - uniform"]["low"]
    assert pooled["td3 (pooled) - uniform"]["searches"] == 2 and pooled["td3 (pooled) - uniform"]["seeds"] == 3


def test_zero_shot_arms_take_their_peak_from_a_range_test(tmp_path, monkeypatch):
    out = tmp_path / "zs.json"
    monkeypatch.setattr("sys.argv", ["schedule_zero_shot.py", "--quick", "--controller", "onecycle@range-test",
                                     "--arms", "onecycle", "--out", str(out)])
    assert _script("schedule_zero_shot").main() == 0
    record = json.loads(out.read_text())
    tuned, plain = record["results"][0]["rows"]
    assert len(tuned["peak_lr"]) == 2 and tuned["range_test"]["steps"] == 20 and "peak_lr" not in plain
    assert tuned["peak_lr"] != [record["results"][0]["peak_lr"]] * 2  # the tested peaks, not the default
    assert plain["controller_minus_arm"]["n"] == 2 and record["environment"]["torch"]


def test_range_test_calibration_scores_each_rule(tmp_path):
    out = tmp_path / "cal.json"
    assert _script("lr_range_calibration").main(["--quick", "--steps", "8", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    (task,) = record["results"]
    assert set(task["agrees"]) == {"8 steps, steepest", "8 steps, min/10"}
    assert all(v >= 0 for v in task["regret_points"].values())  # never better than the best scale
    assert task["best_scale"] in record["scales"]


def test_zero_shot_reuses_an_earlier_controller_as_an_arm(tmp_path, monkeypatch):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    script = _script("schedule_zero_shot")
    monkeypatch.setattr("sys.argv", ["x", "--quick", "--controller", "linear@range-test", "--arms", "onecycle",
                                     "--out", str(first)])
    assert script.main() == 0
    monkeypatch.setattr("sys.argv", ["x", "--quick", "--controller", "cosine", "--arms", "onecycle,linear@range-test",
                                     "--reuse-baselines", str(first), "--out", str(second)])
    assert script.main() == 0
    before = json.loads(first.read_text())["results"][0]["rows"]
    after = {r["arm"]: r for r in json.loads(second.read_text())["results"][0]["rows"]}
    assert after["linear@range-test"]["test_accuracy"] == before[0]["test_accuracy"]  # checked on seed 0
    assert after["linear@range-test"]["first_seed_reproduced"] is True
    assert after["linear@range-test"]["peak_lr"] == before[0]["peak_lr"] and len(before[0]["peak_lr"]) == 2


def test_zero_shot_records_a_residual_controllers_factors(tmp_path, monkeypatch):
    out = tmp_path / "zs.json"
    monkeypatch.setattr("sys.argv", ["x", "--quick", "--controller", "zoo:adaptive", "--arms", "onecycle",
                                     "--out", str(out)])
    assert _script("schedule_zero_shot").main() == 0
    controller, plain = json.loads(out.read_text())["results"][0]["rows"]
    assert len(controller["factors"]) == 2 and all(len(f) == 6 for f in controller["factors"])  # 6 decisions
    assert all(0.25 <= x <= 4.0 for f in controller["factors"] for x in f) and "factors" not in plain


def test_in_distribution_pairs_arms_on_drawn_tasks(tmp_path, monkeypatch):
    out = tmp_path / "ind.json"
    monkeypatch.setattr("sys.argv", ["x", "--quick", "--controller", "zoo:adaptive", "--arms", "onecycle,linear",
                                     "--jobs", "1", "--out", str(out)])
    assert _script("schedule_in_distribution").main() == 0
    record = json.loads(out.read_text())
    assert len(record["tasks"]) == 2 and [t["seed"] for t in record["tasks"]] == [1000, 1001]  # task-seed + i
    assert all(t["task"]["model"] == "mlp" for t in record["tasks"])  # drawn from the given spec
    rows = {r["arm"]: r for r in record["summary"]}
    best = [max(r["test_accuracy"] for r in t["rows"] if r["arm"] != "controller") for t in record["tasks"]]
    assert rows["best hand-made (per task)"]["mean"] == pytest.approx(sum(best) / 2)
    assert rows["onecycle"]["controller_minus_arm"]["n"] == 2
    assert len(record["tasks"][0]["rows"][0]["factors"]) == 6  # the controller's decisions


def test_zero_shot_scales_an_arms_peak(tmp_path, monkeypatch):
    out = tmp_path / "zs.json"
    script = _script("schedule_zero_shot")
    monkeypatch.setattr("sys.argv", ["x", "--quick", "--controller", "onecycle@x3", "--arms", "onecycle,onecycle@x1",
                                     "--out", str(out)])
    assert script.main() == 0
    rows = {r["arm"]: r for r in json.loads(out.read_text())["results"][0]["rows"]}
    assert rows["onecycle@x1"]["test_accuracy"] == rows["onecycle"]["test_accuracy"]  # x1 is the default peak
    assert rows["controller"]["test_accuracy"] != rows["onecycle"]["test_accuracy"]  # x3 is another run
    assert script.split_scale("linear@x0.5") == ("linear", 0.5)
    with pytest.raises(SystemExit, match="NAME@xFACTOR"):
        script.split_scale("onecycle@xfast")


def test_inner_loop_runs_on_larger_rgb_images(capsys):
    pytest.importorskip("torchvision")
    code = _script("inner_loop").main(["--dataset", "digits", "--shape", "3x24x24", "--train-size", "200",
                                       "--steps", "2", "--warmup", "0", "--workers", "0", "--batch-size", "16",
                                       "--device", "cpu"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_shape"] == [3, 24, 24] and result["train_images"] <= 220
    assert result["policysearch_images_per_s"] > 0 and result["torchvision_images_per_s"] > 0


def test_probe_cost_refits_the_peak_rule_on_cheaper_probes(tmp_path):
    from policysearch.policies.peak_rule import PeakRule

    out, rule = tmp_path / "cost.json", tmp_path / "rule.json"
    argv = ["--settings", "8x1,4x2", "--rows", "6", "--out", str(out), "--save-rule", "4x2", str(rule)]
    assert _script("peak_rule_probe_cost").main(argv) == 0
    record = json.loads(out.read_text())
    assert [r["probe_images"] for r in record["results"]] == [8 * 3, 4 * 5]  # a Hessian-vector product: 2 images
    assert record["results"][0]["agreement_with_reference"] == 1.0
    saved = PeakRule.load(rule)
    assert (saved.images, saved.iterations) == (4, 2) and "4 images x 2" in saved.provenance["trained_by"]


def test_probe_cost_stops_when_the_reference_probe_does_not_reproduce_the_table(monkeypatch):
    script = _script("peak_rule_probe_cost")
    real = script.recompute

    def shifted(rows, val_size, images, iterations):
        new = real(rows, val_size, images, iterations)
        new[1]["features"] = {**new[1]["features"], "log_lr_sharpness": new[1]["features"]["log_lr_sharpness"] + 1e-3}
        return new

    monkeypatch.setattr(script, "recompute", shifted)
    with pytest.raises(SystemExit, match="did not reproduce the stored features of rows"):
        script.main(["--settings", "128x8", "--rows", "2"])


def test_decision_seeds_trains_the_finalists_again_and_matches_the_products_decision(tmp_path):
    from policysearch.cli.main import main as cli

    run = tmp_path / "run"
    command = ["augment", "--dataset", "digits", "--train-size", "200", "--model", "mlp", "--epochs", "2",
               "--controller", "random", "--budget", "2", "--top", "1", "--seeds", "2", "--baselines", "none",
               "--episode-length", "2", "--seed", "0", "--workers", "1", "--out", str(run), "--no-progress"]
    assert cli([*command, "--decision-seeds", "1"]) == 0  # as the registered runs were made: one seed per arm
    registered = json.loads((run / "protocol.json").read_text())["held_out"]
    script = _script("decision_seeds")
    rows = tmp_path / "rows.json"
    assert script.main(["collect", "--seeds", "3", "--out", str(rows), "--", *command, "--decision-seeds", "1",
                        "--resume"]) == 0
    collected = json.loads(rows.read_text())
    assert collected["finalists"] == [registered["searched"], registered["baseline"]]
    assert all(len(collected["held_out"][arm]) == 3 for arm in collected["finalists"])
    report = tmp_path / "report.json"
    assert script.main(["report", str(rows), "--out", str(report)]) == 0
    by_seeds = json.loads(report.read_text())["runs"][0]["by_seeds"]
    assert [r["seeds"] for r in by_seeds] == [1, 2, 3]
    assert by_seeds[0]["difference"] == pytest.approx(registered["difference"])  # the run's own decision
    # The product with --decision-seeds 3 (resumed: nothing new is trained) takes the script's 3-seed decision.
    assert cli([*command, "--decision-seeds", "3", "--resume"]) == 0
    product = json.loads((run / "protocol.json").read_text())["held_out"]
    assert product["seeds"] == 3 and product["difference"] == pytest.approx(by_seeds[2]["difference"])
    assert product["exported"] == by_seeds[2]["exported_at_bar"] and "seeds' scatter" in product["bar"]
    assert product["share_ahead"] == pytest.approx(by_seeds[2]["share_ahead"])
    assert product["share_ahead_images"] == by_seeds[2]["share_ahead_images"]


def test_free_features_refit_reproduces_the_shipped_fit_and_reports_every_feature_set(tmp_path):
    script = _script("peak_rule_free_features")
    out = tmp_path / "free.json"
    assert script.main(["--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == len(script.FEATURE_SETS)
    stored = json.loads((BENCHMARKS / "results" / "schedule_zero_shot" / "train-peak-rule" / "summary.json")
                        .read_text())["fit"]
    shipped = results[0]  # the table's own features, fitted as the rule was: the stored cross-validation
    assert shipped["needs_probe"] and shipped["penalty"] == stored["penalty"]
    assert shipped["cv_gain_5_folds"] == pytest.approx(next(
        c["value"] for c in stored["cross_validation"] if c["penalty"] == stored["penalty"]))
    assert not any(r["needs_probe"] for r in results[1:])
