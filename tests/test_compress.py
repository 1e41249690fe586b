"""Tests for policies/compress.py (CompressionPlan), policysearch/distill.py and envs/compress.py (Compress-v0)."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import policysearch  # noqa: F401  (registers the envs)
from policysearch.errors import ConfigError, MissingExtraError, PolicyFormatError, UnknownNameError
from policysearch.metrics import count_parameters, flops_per_image
from policysearch.models import build_model
from policysearch.policies.compress import CompressionPlan, channel_groups, kept_channels, prunable_layers
from policysearch.search import Budget, run_search

TINY = {"finetune_steps": 2, "batch_size": 64, "bn_batches": 2, "uniform_first": False}  # candidate 0: own test
KEEP_ALL = np.array([1.0], dtype=np.float32)
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def teachers(digits):
    """A briefly trained cnn and residual resnet on 8x8 digits (seconds on one core)."""
    from policysearch.train.trainer import TrainConfig, Trainer

    out = {}
    for name in ("cnn", "resnet"):
        trainer = Trainer(digits, TrainConfig(model=name, batch_size=64, device="cpu", seed=0), total_steps=20)
        trainer.train_segment(20)
        out[name] = trainer.model.eval()
    return out


@pytest.fixture
def make(digits, teachers):
    def _make(model="cnn", **kwargs):
        return gym.make("policysearch/Compress-v0", teacher=teachers[model], model_name=model, data=digits,
                        **{**TINY, **kwargs})

    return _make


def _example():
    return torch.zeros(1, *SHAPE)


def _half_plan(model: torch.nn.Module, name: str, keep: float = 0.5) -> CompressionPlan:
    groups = channel_groups(model, _example())
    return CompressionPlan(ratios={g.name: keep for g in groups}, channels={g.name: g.channels for g in groups},
                           model=name, input_shape=SHAPE, num_classes=10)


def _run(env, actions, seed=0):
    env.reset(seed=seed)
    out = []
    for a in actions:
        _, reward, done, _, info = env.step(np.array([a], dtype=np.float32))
        out.append((reward, info))
    assert done
    return out


# ---------------------------------------------------------------------- pruning


def test_pruning_shrinks_params_and_flops_and_the_model_still_runs(teachers):
    teacher = teachers["cnn"]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    plan = _half_plan(teacher, "cnn")
    student = plan.apply(teacher)
    assert count_parameters(student) < 0.5 * count_parameters(teacher)
    assert flops_per_image(student, SHAPE)["forward"] < 0.5 * flops_per_image(teacher, SHAPE)["forward"]
    assert student(torch.rand(8, *SHAPE)).shape == (8, 10)
    assert student.features[0][0].out_channels == 16 and student.classifier[1].out_features == 64
    # The teacher is left as it was.
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert [n for n, _ in prunable_layers(teacher, _example())] == ["features.0.0", "features.2.0", "classifier.1"]


def test_residual_channels_stay_coupled(teachers):
    teacher = teachers["resnet"]
    groups = {g.name: g for g in channel_groups(teacher, _example())}
    assert groups["stem.0"].producers == ("stem.0", "layer1.conv2")  # the residual sum couples them
    assert groups["layer2.conv2"].producers == ("layer2.conv2", "layer2.shortcut.0")
    plan = CompressionPlan(ratios={n: 0.25 + 0.1 * i for i, n in enumerate(groups)},
                           channels={n: g.channels for n, g in groups.items()}, model="resnet",
                           input_shape=SHAPE, num_classes=10)
    s = plan.apply(teacher)
    kept = plan.kept()
    assert s.stem[0].out_channels == s.layer1.conv2.out_channels == s.layer1.conv1.in_channels == kept["stem.0"]
    assert s.layer2.conv2.out_channels == s.layer2.shortcut[0].out_channels == s.layer3.conv1.in_channels
    assert s.layer3.conv2.out_channels == s.layer3.shortcut[0].out_channels == s.fc.in_features == kept["layer3.conv2"]
    assert s.layer2.bn2.num_features == kept["layer2.conv2"] and s.layer1.conv1.out_channels == kept["layer1.conv1"]
    assert s(torch.rand(4, *SHAPE)).shape == (4, 10)


def test_plan_reapplies_to_a_fresh_model_with_identical_shapes(teachers):
    plan = _half_plan(teachers["resnet"], "resnet", keep=0.3)
    student = plan.apply(teachers["resnet"])
    with torch.random.fork_rng():
        torch.manual_seed(123)
        fresh = plan.apply(build_model("resnet", SHAPE, 10))  # different weights, different channels kept
    shapes = {k: tuple(v.shape) for k, v in student.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    rebuilt = plan.build(student.state_dict())  # a pruned checkpoint loads into the plan's architecture
    x = torch.rand(4, *SHAPE)
    torch.testing.assert_close(rebuilt.eval()(x), student.eval()(x))


def test_no_layer_is_pruned_to_nothing(teachers):
    assert kept_channels(16, 0.001) == 1 and kept_channels(16, 1.0) == 16
    student = _half_plan(teachers["cnn"], "cnn", keep=1e-6).apply(teachers["cnn"])
    assert student.features[0][0].out_channels == 1
    assert student(torch.rand(2, *SHAPE)).shape == (2, 10)


def test_plan_rejects_unknown_layers_and_unsupported_models(teachers):
    plan = CompressionPlan(ratios={"features.0": 0.5}, channels={"features.0": 32}, model="cnn",
                           input_shape=SHAPE, num_classes=10)
    with pytest.raises(UnknownNameError, match="Did you mean .*'features.0.0'"):
        plan.apply(teachers["cnn"])
    with pytest.raises(ConfigError, match="attention"):
        channel_groups(build_model("vit", SHAPE, 10), _example())
    with pytest.raises(ConfigError, match="criterion"):
        CompressionPlan(ratios={"a": 0.5}, channels={"a": 4}, model="m", input_shape=SHAPE, num_classes=10,
                        criterion="l3")
    with pytest.raises(ConfigError, match="ratios"):
        CompressionPlan(ratios={"a": 0.0}, channels={"a": 4}, model="m", input_shape=SHAPE, num_classes=10)


# ---------------------------------------------------------------------- plan files


def test_plan_json_round_trip_and_bad_files(tmp_path, teachers):
    plan = _half_plan(teachers["cnn"], "cnn", keep=0.40625)
    plan = CompressionPlan(**{**plan.__dict__, "flops": 1234, "params": 99, "teacher_flops": 5000,
                              "teacher_params": 400, "criterion": "l1", "flops_target": 0.3,
                              "provenance": {"seed": 3}})
    path = plan.save(tmp_path / "plan.json")
    loaded = CompressionPlan.load(path)
    assert loaded == plan and loaded.to_dict() == plan.to_dict() and loaded.provenance == {"seed": 3}
    assert loaded.flops_fraction == 1234 / 5000
    raw = json.loads(path.read_text())
    assert raw["kind"] == "compression_plan" and raw["format_version"] == 1
    for field, value in (("ratios", {"features.0.0": "half"}), ("ratios", {"features.0.0": 1.5}),
                         ("criterion", 2), ("input_shape", [1, 8]), ("kind", "lr_schedule")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**raw, field: value}))
        with pytest.raises(PolicyFormatError, match=field):
            CompressionPlan.load(bad)
    bad.write_text(json.dumps({k: v for k, v in raw.items() if k != "flops_target"}))
    with pytest.raises(PolicyFormatError, match="flops_target"):
        CompressionPlan.load(bad)
    bad.write_text("{not json")
    with pytest.raises(PolicyFormatError, match="not valid JSON"):
        CompressionPlan.load(bad)


# ---------------------------------------------------------------------- distillation


def test_kd_loss_kl_term_is_zero_when_student_equals_teacher():
    from policysearch.compression.distill import kd_loss
    from policysearch.train.trainer import soft_cross_entropy

    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    student = z.clone().requires_grad_(True)
    loss = kd_loss(student, z, y, temperature=4.0, alpha=1.0)
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad.abs().max() < 1e-6  # a minimum: zero up to float rounding
    hard = soft_cross_entropy(z, torch.nn.functional.one_hot(y, 10).float())
    torch.testing.assert_close(kd_loss(z, z, y, temperature=2.0, alpha=0.9), 0.1 * hard)
    assert kd_loss(z + torch.randn(16, 10, generator=g), z, y, alpha=1.0) > 0
    with pytest.raises(ConfigError, match="temperature"):
        kd_loss(z, z, y, temperature=0.0)


def test_distill_is_seeded_and_counts_its_cost(digits, teachers):
    from policysearch.compression.distill import distill

    plan = _half_plan(teachers["cnn"], "cnn")
    runs = []
    for _ in range(2):
        student = plan.apply(teachers["cnn"])
        stats = distill(student, teachers["cnn"], digits, steps=3, lr=0.01, batch_size=64, seed=5)
        runs.append((stats.loss, [p.detach().clone() for p in student.parameters()]))
    assert stats.steps == 3 and stats.images == 192 and stats.train_flops > 0 and stats.diverged is None
    assert runs[0][0] == runs[1][0] and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_distill_reports_a_diverging_loss(digits, teachers):
    from policysearch.compression.distill import distill

    student = _half_plan(teachers["cnn"], "cnn").apply(teachers["cnn"])
    with torch.no_grad():
        student.classifier[3].weight.fill_(float("nan"))
    stats = distill(student, teachers["cnn"], digits, steps=3, lr=0.01, batch_size=64)
    assert stats.steps == 1 and "distillation loss became nan" in stats.diverged


# ---------------------------------------------------------------------- env


def test_gymnasium_and_sb3_env_checkers_pass(make):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make(finetune_steps=1)
    base = env.unwrapped
    assert base.mode == "schedule" and base.episode_length == 3 and base.cost_metric == "tflops"
    check_env(base, skip_render_check=True)
    sb3_check_env(base, warn=True)


@pytest.mark.parametrize("model", ["cnn", "resnet"])
def test_flops_target_is_met_even_when_every_action_keeps_everything(make, model):
    env = make(model, flops_target=0.4, min_keep=0.2)
    steps = _run(env, [1.0] * env.unwrapped.episode_length)
    final = steps[-1][1]
    assert final["flops_fraction"] <= 0.4 + 1e-9
    assert final["flops_fraction"] == pytest.approx(final["predicted_flops_fraction"], abs=1e-12)
    assert final["params_fraction"] < 1.0 and 0.0 <= final["metric"] <= 1.0
    assert steps[0][1]["keep"] == 1.0 and any(info["clipped"] for _, info in steps)
    assert all(r == 0.0 for r, _ in steps[:-1]) and steps[-1][0] == final["metric"]
    kept = {info["layer"]: info["kept_channels"] for _, info in steps}
    assert CompressionPlan.from_dict(final["plan"]).kept() == kept


def test_same_seed_and_actions_give_same_rewards(make):
    actions = [0.3, -0.6, 0.9]
    first = _run(make(), actions, seed=7)
    second = _run(make(), actions, seed=7)
    assert [r for r, _ in first] == [r for r, _ in second]
    assert first[-1][1] == second[-1][1]


def test_seed_argument_makes_unseeded_resets_reproducible(make):
    assert make(seed=3).reset()[1]["child_seed"] == make(seed=3).reset()[1]["child_seed"]


def test_diverging_finetune_ends_the_episode_with_a_penalty(make, monkeypatch, caplog):
    import policysearch.compression.distill as distill_module

    def diverging(*args, **kwargs):
        return distill_module.DistillStats(1, 64, 0.0, float("nan"), 1.0, diverged="loss became nan at step 1")

    monkeypatch.setattr("policysearch.envs.compress.distill", diverging)  # where the env calls it
    env = make(divergence_penalty=2.0, proxy="distill")
    (_, _), (_, _), (reward, info) = _run(env, [0.0, 0.0, 0.0])
    assert reward == -2.0 and info["diverged"] and "metric" not in info
    assert any("diverged" in r.message for r in caplog.records)


def test_frozen_teacher_gives_a_frozen_student(teachers):
    teacher = build_model("cnn", SHAPE, 10).requires_grad_(False)
    student = _half_plan(teacher, "cnn").apply(teacher)
    assert not any(p.requires_grad for p in student.parameters())
    assert student(torch.rand(2, *SHAPE)).shape == (2, 10)


def test_error_log_flops_reward(make):
    (_, _), (_, _), (reward, info) = _run(make(reward="error_log_flops"), [0.0, 0.0, 0.0])
    assert reward == pytest.approx(-(1.0 - info["metric"]) * np.log(info["flops"]))


def test_bad_settings_fail_at_construction(make, digits, teachers):
    with pytest.raises(ConfigError, match="out of reach"):
        make(flops_target=0.01, min_keep=0.5)
    with pytest.raises(UnknownNameError, match="Did you mean 'l2'"):
        make(criterion="l22")
    with pytest.raises(ConfigError, match="min_keep is 0.6, expected at most max_keep \\(0.5\\)"):
        make(min_keep=0.6, max_keep=0.5)
    with pytest.raises(ConfigError, match="finetune_lr is 10000.0, expected a finite number > 0 and <= 1000"):
        make(finetune_lr=1e4)
    with pytest.raises(ConfigError, match=r"finetune_steps \(None: one epoch\) is 1.5, expected an int >= 0"):
        make(finetune_steps=1.5)
    with pytest.raises(ConfigError, match="exactly one"):
        gym.make("policysearch/Compress-v0", data=digits)
    with pytest.raises(ConfigError, match="attention"):
        gym.make("policysearch/Compress-v0", teacher=build_model("vit", SHAPE, 10), data=digits, **TINY)


def test_env_loads_a_checkpoint(tmp_path, digits, teachers):
    from policysearch.train.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "cnn.pt", teachers["cnn"], "cnn", SHAPE, 10, {"dataset": digits.describe()})
    env = gym.make("policysearch/Compress-v0", checkpoint=path, data=digits, **TINY)
    assert env.unwrapped.model_name == "cnn" and env.unwrapped.describe()["layers"][0] == "features.0.0"


def test_env_implements_the_search_contract_on_the_shared_base(make, digits, teachers):
    from policysearch.envs.base import ChildConfig, ChildEnv
    from policysearch.envs.contract import SuggestsEpisodes, as_search_env

    env = make(child=ChildConfig(child_seed=5, split_seed=1), divergence_penalty=2.0)
    base = as_search_env(env)
    assert isinstance(base, ChildEnv) and isinstance(base, SuggestsEpisodes) and base.mode == "schedule"
    assert (base.cost_metric, base.cost_weight, base.reward_metric) == ("tflops", 0.0, "accuracy")
    assert base.child_seed == 5 and base.divergence_penalty == 2.0 and base.describe()["child_seed"] == 5
    assert base.reset(seed=0)[1]["child_seed"] == 5
    with pytest.raises(ConfigError, match="Compress-v0 does not use ChildConfig.model"):
        make(child=ChildConfig(model="resnet"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'episode_length'"):
        make(episode_length=3)


def test_random_search_writes_a_loadable_plan(make, tmp_path):
    env = make(flops_target=0.5)
    result = run_search(env, "random", Budget(child_trainings=2), tmp_path, seed=0, progress=False,
                        artefact_name="plan.json")
    plan = CompressionPlan.load(tmp_path / "plan.json")
    assert plan == result.artefact and len(result.episodes) == 2
    assert list(plan.ratios) == ["features.0.0", "features.2.0", "classifier.1"]
    assert plan.flops_fraction <= 0.5 + 1e-9 and plan.provenance["env_id"] == "policysearch/Compress-v0"
    assert result.summary["train_flops"] > 0
    assert plan.apply(env.unwrapped.teacher)(torch.rand(2, *SHAPE)).shape == (2, 10)


def test_tpe_baseline_searches_one_keep_ratio_per_layer(make):
    pytest.importorskip("optuna")
    result = run_search(make(), "tpe", Budget(child_trainings=2), None, seed=0, progress=False)
    assert len(result.episodes) == 2 and set(result.artefact.ratios) == set(make().unwrapped.spec_kwargs["layers"])


def test_missing_torch_pruning_names_the_extra(monkeypatch, digits, teachers):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # makes `import torch_pruning` fail
    with pytest.raises(MissingExtraError, match=r"policysearch\[prune\]"):
        channel_groups(teachers["cnn"], _example())
    with pytest.raises(MissingExtraError, match="torch_pruning"):
        gym.make("policysearch/Compress-v0", teacher=teachers["cnn"], data=digits, **TINY)
