"""The peak rule: the curvature estimate at a run's start, the rule's choice and files, its use in
`train_run` (factor 1 is the base schedule bit for bit), the ridge fit, and a real table run with
resume and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from policysearch.contrib.peak_rule_search import FILES, ArmFit, fit_rule, learn_peak_rule
from policysearch.data import prepare
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.policies.adaptive import ZOO_DIR, resolve_schedule
from policysearch.policies.peak_rule import PeakRule
from policysearch.policies.schedule import named_schedule
from policysearch.sharpness import START_FEATURES, start_statistics
from policysearch.train.recipe import train_run
from policysearch.train.trainer import TrainConfig

TINY = "pairs=digits:mlp;epochs=1-1;batch=128;wd=0;val-size=100"


@pytest.fixture(scope="module")
def digits():
    return prepare("digits", val_size=100, seed=0)


def _rule(biases: list[float], weights: list[list[float]] | None = None, factors: tuple = (1.0, 2.0)) -> PeakRule:
    d = len(START_FEATURES)
    weights = weights or [[0.0] * d for _ in factors]
    return PeakRule("onecycle", list(factors), list(START_FEATURES), [0.0] * d, [1.0] * d, weights, biases,
                    [-10.0] * d, [10.0] * d, images=32, iterations=4)


def test_sharpness_is_the_top_hessian_eigenvalue_and_touches_nothing(digits) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(digits.input_shape)), 10))
    before = [p.detach().clone() for p in model.parameters()]
    rng_before = torch.get_rng_state()
    stats = start_statistics(model, digits, seed=3, images=32, iterations=60)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # the exact Hessian of the same batch's loss (softmax regression: small enough to form)
    from policysearch.data.preprocess import normalise

    gen = torch.Generator().manual_seed(3)
    idx = torch.randperm(len(digits.y_train), generator=gen)[:32]
    x = normalise(digits.x_train[idx].float().div_(255.0), digits).flatten(1)
    y = digits.y_train[idx]
    w0, b0 = model[1].weight.detach(), model[1].bias.detach()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        w, b = flat[: w0.numel()].view_as(w0), flat[w0.numel():]
        return nn.functional.cross_entropy(x @ w.T + b, y)

    hessian = torch.autograd.functional.hessian(loss, torch.cat([w0.reshape(-1), b0]))
    top = float(torch.linalg.eigvalsh(hessian).abs().max())
    assert stats.sharpness == pytest.approx(top, rel=0.02)
    assert stats.images == 32 * (1 + 2 * 60) and stats.grad_norm > 0
    features = stats.features(lr=0.05, total_steps=100, optimizer="sgd")
    assert list(features) == list(START_FEATURES)
    assert features["log_lr_sharpness"] == pytest.approx(math.log10(0.05 * stats.sharpness))
    assert features["log_steps"] == pytest.approx(2.0) and features["adaptive"] == 0.0


def test_rule_keeps_factor_one_unless_another_scores_higher_and_clips() -> None:
    values = dict.fromkeys(START_FEATURES, 0.0)
    assert _rule([0.0, 0.0]).choose(values) == 1.0  # a tie: the base schedule
    assert _rule([0.0, 0.5]).choose(values) == 2.0
    assert _rule([0.0, -0.5]).choose(values) == 1.0
    # score = w . clip(z) + b: the first feature raises factor 2's score, clipped at the table's edge
    rule = _rule([0.0, -1.0], weights=[[0, 0, 0], [1.0, 0, 0]])
    rule.high[0] = 2.0
    assert rule.choose({**values, "log_lr_sharpness": 0.5}) == 1.0
    assert rule.choose({**values, "log_lr_sharpness": 1.5}) == 2.0
    assert rule.scores({**values, "log_lr_sharpness": 50.0})[1] == pytest.approx(1.0)  # clipped at 2
    # The guard: outside the fitted table the rule keeps factor 1 (the base schedule itself) ...
    assert rule.outside({**values, "log_lr_sharpness": 50.0}) == ["log_lr_sharpness"]
    assert rule.choose({**values, "log_lr_sharpness": 50.0}) == 1.0
    rule.guard = False  # ... and without it, it extrapolates from the table's edge
    assert rule.choose({**values, "log_lr_sharpness": 50.0}) == 2.0


def test_the_shipped_closed_loop_controllers_warn_when_loaded_by_name() -> None:
    from policysearch.policies.adaptive import resolve_schedule

    with pytest.warns(UserWarning, match="zoo:adaptive is not recommended: it lost 4.7 points"):
        resolve_schedule("zoo:adaptive", base_lr=0.05)
    assert resolve_schedule("zoo:peak-rule", base_lr=0.05).guard  # the offered zero-shot rule is guarded


def test_rule_files_roundtrip_and_malformed_files_are_refused(tmp_path) -> None:
    rule = _rule([0.0, 0.25], factors=(1.0, 2.0))
    path = rule.save(tmp_path / "rule.json")
    again = resolve_schedule(path, base_lr=0.05)
    assert isinstance(again, PeakRule) and again.to_dict() == rule.to_dict()
    good = json.loads(path.read_text())
    for change, message in [({"factors": [1.5, 2.0]}, "need 1"), ({"biases": [0.0]}, "biases"),
                            ({"features": ["x", "y", "z"]}, "feature"), ({"kind": "other"}, "kind"),
                            ({"std": [0.0, 1.0, 1.0]}, "std")]:
        (tmp_path / "bad.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(PolicyFormatError, match=message):
            PeakRule.load(tmp_path / "bad.json")
    del good["weights"]
    (tmp_path / "bad.json").write_text(json.dumps(good))
    with pytest.raises(PolicyFormatError, match="weights"):
        PeakRule.load(tmp_path / "bad.json")


def test_train_run_with_a_rule_is_the_base_schedule_at_the_chosen_peak_bit_for_bit(digits) -> None:
    config = TrainConfig(model="mlp", batch_size=128, seed=5)
    base = train_run(digits, config, 2, schedule=named_schedule("onecycle", config.lr), progress=False)
    kept = train_run(digits, config, 2, schedule=_rule([0.0, -1.0]), progress=False)
    assert kept.selection["factor"] == 1.0
    assert kept.test["accuracy"] == base.test["accuracy"] and kept.val["nll"] == base.val["nll"]
    assert kept.cost["images"] == base.cost["images"] + kept.selection["images"]  # the estimate is charged
    doubled = train_run(digits, config, 2, schedule=_rule([0.0, 1.0]), progress=False)
    high = TrainConfig(model="mlp", batch_size=128, seed=5, lr=2 * config.lr)
    reference = train_run(digits, high, 2, schedule=named_schedule("onecycle", high.lr), progress=False)
    assert doubled.selection["factor"] == 2.0 and doubled.selection["peak_lr"] == pytest.approx(high.lr)
    assert doubled.test["accuracy"] == reference.test["accuracy"] and doubled.val["nll"] == reference.val["nll"]
    with pytest.raises(ConfigError, match="peak rule"):
        train_run(digits, config, 1, schedule=_rule([0.0, 1.0]), progress=False, peak="range-test")
    assert math.isnan(train_run(digits, config, 1, progress=False, test=False).test["accuracy"])


def test_ridge_fit_learns_a_choice_the_features_carry_and_inf_is_the_best_constant() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    # factor 2 gains where the first feature is low, loses where it is high; factor 1.41 never pays
    gains = np.stack([np.zeros(200), -0.5 + 0.1 * rng.normal(size=200), -2.0 * x[:, 0] + 0.3 * rng.normal(size=200)], 1)
    fit = ArmFit(x, gains, reference=0, penalty=0.0)
    choices = fit.choices(x)
    assert set(choices[x[:, 0] < -0.5]) == {2} and set(choices[x[:, 0] > 0.5]) == {0}
    oracle = gains.max(axis=1).mean()
    assert fit.value(x, gains) > 0.9 * oracle
    constant = ArmFit(x, gains, reference=0, penalty=math.inf)
    assert np.all(constant.weights == 0) and set(constant.choices(x)) == {int(np.argmax(gains.mean(0)))}
    assert constant.value(x, gains) < fit.value(x, gains)


def test_fit_rule_reports_cross_validation_and_the_rule_reproduces_the_fit() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        s = float(rng.uniform(-1.5, 0.5))
        rows.append({"group": ["a", "b", "c"][i % 3], "features": {"log_lr_sharpness": s, "log_steps": 2.0,
                                                                    "adaptive": 0.0},
                     "gains": [0.0, -3.0 * (s + 0.5) + 0.2 * float(rng.normal())]})
    rule, report = fit_rule(rows, [1.0, 2.0], "onecycle", 32, 4)
    assert {c["penalty"] for c in report["cross_validation"]} >= {0.0, "inf"}
    assert set(report["cross_validation_by_pair"][0]["per_group"]) == {"a", "b", "c"}
    for row in rows:
        assert rule.choose(row["features"]) == row["choice"]
    assert rule.choose({"log_lr_sharpness": -1.4, "log_steps": 2.0, "adaptive": 0.0}) == 2.0
    assert rule.choose({"log_lr_sharpness": 0.4, "log_steps": 2.0, "adaptive": 0.0}) == 1.0


def test_learn_peak_rule_writes_a_table_resumes_and_refuses_another_run(tmp_path) -> None:
    from policysearch.envs.schedule_tasks import TaskSampler

    sampler = TaskSampler.parse(TINY)
    out = tmp_path / "run"
    _, summary = learn_peak_rule(sampler, 3, out, factors=(1.0, 2.0), progress=False)
    assert all((out / name).is_file() for name in FILES)
    assert summary["child_trainings"] == 6 and summary["tasks_trained"] == 3
    lines = (out / "table.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(len(json.loads(line)["gains"]) == 2 for line in lines)
    assert json.loads(lines[0])["gains"][0] == 0.0
    assert isinstance(resolve_schedule(out / "rule.json", base_lr=0.05), PeakRule)
    with pytest.raises(ConfigError, match="already holds a run"):
        learn_peak_rule(sampler, 3, out, factors=(1.0, 2.0), progress=False)
    # a crash after two tasks, with a torn third line: resume trains the third only, the same row again
    (out / "table.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])
    _, resumed = learn_peak_rule(sampler, 3, out, factors=(1.0, 2.0), resume=True, progress=False)
    again = (out / "table.jsonl").read_text().splitlines()
    assert len(again) == 3 and again[:2] == lines[:2]
    assert json.loads(again[-1])["gains"] == json.loads(lines[2])["gains"]
    assert resumed["tasks_trained"] == 3
    # the stream does not depend on its length: cut to two tasks (the third row stays in the file, unused)
    _, cut = learn_peak_rule(sampler, 2, out, factors=(1.0, 2.0), resume=True, progress=False)
    assert cut["tasks_trained"] == 2 and len((out / "table.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ConfigError, match="other settings"):
        learn_peak_rule(sampler, 2, out, factors=(1.0, 1.5), resume=True, progress=False)
    with pytest.raises(ConfigError, match="need 1"):
        learn_peak_rule(sampler, 3, tmp_path / "x", factors=(1.5, 2.0), progress=False)


def test_cli_learns_a_rule_and_train_uses_it(tmp_path, capsys) -> None:
    from policysearch.cli import main

    out = tmp_path / "cli"
    code = main(["peak-rule", "--tasks", TINY, "--n-tasks", "2", "--factors", "1", "2", "--out", str(out),
                 "--no-progress", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["child_trainings"] == 4 and summary["fit"]["penalty"] is not None
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--schedule", str(out / "rule.json"),
                 "--no-progress"]) == 0
    assert "peak rule: x" in capsys.readouterr().out
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--schedule", "zoo:peak-rule", "--no-progress",
                 "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)["peak_rule"]
    assert shipped["factor"] in PeakRule.load(ZOO_DIR / "peak-rule.json").factors
    assert main(["peak-rule", "--tasks", TINY, "--n-tasks", "2", "--factors", "1.5", "2", "--out",
                 str(tmp_path / "bad"), "--no-progress"]) != 0


def test_factor_for_a_plain_loop_reads_one_batch(digits) -> None:
    from policysearch.data.preprocess import normalise

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = normalise(digits.x_train[:128].float() / 255.0, digits)
    y = digits.y_train[:128]
    rule = _rule([0.0, -1.0], weights=[[0, 0, 0], [-4.0, 0, 0]])  # factor 2 where lr * sharpness is low
    assert rule.factor_for(model, x, y, lr=1e-4, total_steps=100) == 2.0
    assert rule.factor_for(model, x, y, lr=10.0, total_steps=100) == 1.0


def test_example_uses_the_shipped_rule_in_a_plain_loop() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "zoo_peak_rule_loop.py"
    spec = importlib.util.spec_from_file_location("zoo_peak_rule_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factor, accuracy = module.main(epochs=1)
    assert factor in PeakRule.load(ZOO_DIR / "peak-rule.json").factors and 0.0 <= accuracy <= 1.0


def test_a_net_of_kinds_the_rule_has_no_gain_for_keeps_the_base_schedule_and_pays_for_no_probe(
        digits, monkeypatch, capsys) -> None:
    from policysearch.cli import main
    from policysearch.sharpness import layer_kinds

    assert layer_kinds(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))) == (
        "batch_norm", "conv", "linear")
    assert layer_kinds(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(), nn.LayerNorm(4))) == (
        "layer_norm", "linear")
    assert layer_kinds(nn.PReLU()) == ("other",) and layer_kinds(nn.ReLU()) == ()
    assert layer_kinds(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, affine=False))) == ("batch_norm", "linear")
    config = TrainConfig(model="cnn", batch_size=128, seed=3)  # the built-in cnn: batch_norm, conv, linear
    base = train_run(digits, config, 1, schedule=named_schedule("onecycle", config.lr), progress=False)
    rule = _rule([0.0, 5.0])  # without a list of kinds, it doubles the peak everywhere
    rule.decides_for = [("linear",)]
    kept = train_run(digits, config, 1, schedule=rule, progress=False)
    assert kept.selection["factor"] == 1.0 and kept.selection["images"] == 0
    assert "batch_norm" in kept.selection["skipped"]
    assert kept.test["accuracy"] == base.test["accuracy"] and kept.val["nll"] == base.val["nll"]
    assert kept.cost["images"] == base.cost["images"]  # nothing measured, nothing charged
    rule.guard = False  # unguarded, the rule measures and decides as before
    measured = train_run(digits, config, 1, schedule=rule, progress=False)
    assert measured.selection["factor"] == 2.0 and measured.selection["images"] > 0
    rule.guard = True
    mlp = train_run(digits, TrainConfig(model="mlp", batch_size=128, seed=3), 1, schedule=rule, progress=False)
    assert mlp.selection["factor"] == 2.0 and mlp.selection["images"] > 0  # a kind it decides for
    # a plain loop: a net of another kind is not measured at all
    monkeypatch.setattr("policysearch.policies.peak_rule.batch_statistics",
                        lambda *a, **k: pytest.fail("measured a net the rule skips"))
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 10))
    assert rule.factor_for(net, digits.x_train[:32].float(), digits.y_train[:32], lr=1e-4, total_steps=10) == 1.0
    monkeypatch.undo()
    # the shipped rule skips the built-in cnn, and the CLI says so
    assert main(["train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--schedule", "zoo:peak-rule",
                 "--no-progress"]) == 0
    assert "without a probe" in capsys.readouterr().out


def test_the_kinds_a_rule_decides_for_are_fitted_from_the_table_and_kept_in_the_file(tmp_path) -> None:
    rows = [{"group": "a" if i % 2 else "b", "layer_kinds": ["linear"] if i % 2 else ["batch_norm", "conv", "linear"],
             "gains": [0.0, 1.0 if i % 2 else -1.0],
             "features": {"log_lr_sharpness": 0.1 * i, "log_steps": 2.0, "adaptive": 0.0}} for i in range(12)]
    rule, report = fit_rule(rows, [1.0, 2.0], "onecycle", 32, 4)
    assert rule.decides_for == [("linear",)]
    assert [(r["layer_kinds"], r["rows"], r["decides"]) for r in report["by_layer_kinds"]] == [
        (["batch_norm", "conv", "linear"], 6, False), (["linear"], 6, True)]
    again = PeakRule.load(rule.save(tmp_path / "rule.json"))
    assert again.decides_for == [("linear",)] and again.to_dict() == rule.to_dict()
    for row in rows:
        row["gains"][1] = -abs(row["gains"][1])  # nothing gains: the rule decides for no net
    assert fit_rule(rows, [1.0, 2.0], "onecycle", 32, 4)[0].decides_for == []
    good = json.loads((tmp_path / "rule.json").read_text())
    for bad in ("linear", [["linear", 3]], {"linear": True}):
        (tmp_path / "bad.json").write_text(json.dumps({**good, "decides_for": bad}))
        with pytest.raises(PolicyFormatError, match="decides_for"):
            PeakRule.load(tmp_path / "bad.json")
    del good["decides_for"]  # a rule written before the list: it decides for every net
    (tmp_path / "old.json").write_text(json.dumps(good))
    assert PeakRule.load(tmp_path / "old.json").decides_for is None


def test_the_shipped_kinds_are_what_the_shipped_table_gives() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    folder = root / "benchmarks" / "results" / "schedule_zero_shot" / "train-peak-rule"
    rows = [json.loads(line) for line in (folder / "table.jsonl").read_text().splitlines()]
    settings = json.loads((folder / "settings.json").read_text())
    rule, report = fit_rule(rows, settings["factors"], settings["base"], 32, 4)
    kinds = {tuple(r["layer_kinds"]): r for r in report["by_layer_kinds"]}
    assert kinds[("batch_norm", "conv", "linear")]["rows"] == 46  # the cnn on digits and Fashion-MNIST: it lost
    assert max(kinds[("batch_norm", "conv", "linear")]["mean_gain_per_factor"][1:]) < 0
    assert rule.decides_for == PeakRule.load(ZOO_DIR / "peak-rule.json").decides_for == [
        ("attention", "conv", "layer_norm", "linear", "other"), ("linear",)]
