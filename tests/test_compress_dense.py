"""Compression of dense models: a U-Net teacher on segmentation and restoration data through the scoring
helpers (policysearch/compression/pruning.py, refine.py), Compress-v0 (envs/compress.py), the protocol
(`compress_model`, policysearch/protocol/compress.py) and the `compress` command (policysearch/cli/compressing.py).

Every score is the data's task metric: mIoU for segmentation, PSNR for restoration. Tiny data (1x16x16 squares,
160 training images: a distillation batch is 128) and a few steps keep the file to seconds; where a test needs
the protocol to go one way (the search to move, the searched plan to be chosen on validation), it says so and
fixes only that choice: the distillations and scores it then checks are real.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import policysearch  # noqa: F401  (registers the envs)
from policysearch.compression.pruning import score_metric, val_accuracy, val_score
from policysearch.data import prepare
from policysearch.errors import ConfigError
from policysearch.models import UNet
from policysearch.policies.compress import CompressionPlan
from policysearch.train.evaluate import evaluate
from policysearch.train.trainer import TrainConfig, Trainer

pytest.importorskip("torch_pruning")

SHAPE = (1, 16, 16)


def _squares(task: str, n: int = 200) -> object:
    """Squares of two brightnesses on black (`dense_helpers.squares`): a mask of 3 classes, or the clean image
    of a noisy one; 160 train (20 of them validation), 40 test."""
    from dense_helpers import squares

    return squares(task, n=n, size=SHAPE[1], train=160, val=20)


def _teacher(data: object, model: torch.nn.Module, steps: int = 40) -> torch.nn.Module:
    trainer = Trainer(data, TrainConfig(model="mlp", optimizer="adamw", lr=3e-3, batch_size=20, seed=0),
                      total_steps=steps, model=model)
    trainer.train_segment(steps)
    return trainer.model.eval()


def _small_unet(outputs: int) -> UNet:
    torch.manual_seed(0)
    return UNet(SHAPE, outputs, width=4, depth=1)  # 5 channel groups: a compass round of 10 neighbours


@pytest.fixture(scope="module")
def seg():
    data = _squares("segmentation")
    return data, _teacher(data, _small_unet(3))


@pytest.fixture(scope="module")
def rest():
    data = _squares("restoration")
    return data, _teacher(data, _small_unet(1))


def _force_a_move(monkeypatch) -> None:
    """The compass search's distillations replaced by a score that grows with the first group's channels: the
    search moves once (to keep more of them), whatever short distillations would say."""
    import policysearch.compression.refine

    def fake(plans, teacher, data, steps, lr, seeds, split="test", workers=1):
        assert split == "val"
        return [[sorted(p.kept().items())[0][1] / 1000 for _ in seeds] for p in plans]

    monkeypatch.setattr(policysearch.compression.refine, "distilled_scores", fake)


def _choose_searched_on_validation(monkeypatch) -> list[str]:
    """The protocol's choice on validation fixed to the searched plan (listed first); the test split's
    distillations stay real. Returns the splits the protocol distilled for."""
    import policysearch.protocol.compress as protocol

    real, splits = protocol.distilled_scores, []

    def scores(plans, teacher, data, steps, lr, seeds, split="test", workers=1):
        splits.append(split)
        if split == "val":
            return [[1.0 - i for _ in seeds] for i in range(len(plans))]
        return real(plans, teacher, data, steps, lr, seeds, split, workers)

    monkeypatch.setattr(protocol, "distilled_scores", scores)
    return splits


# ---------------------------------------------------------------------- scores
def test_val_score_is_the_task_metric_on_the_split_or_its_first_images(seg, rest, digits):
    for data, teacher, metric in ((*seg, "miou"), (*rest, "psnr")):
        assert score_metric(data) == metric
        assert val_score(teacher, data) == pytest.approx(evaluate(teacher, data, "val")[metric], abs=1e-9)
        assert val_score(teacher, data, split="test") == pytest.approx(evaluate(teacher, data, "test")[metric],
                                                                       abs=1e-9)
        first = dataclasses.replace(data, x_val=data.x_val[:7], y_val=data.y_val[:7])  # the same metric, 7 images
        assert val_score(teacher, data, images=7) == pytest.approx(evaluate(teacher, first, "val")[metric], abs=1e-9)
    assert 0.5 < val_score(*reversed(seg)) <= 1.0 and val_score(*reversed(rest)) > 15.0  # trained teachers
    # A classifier is scored exactly as before: accuracy image by image.
    torch.manual_seed(0)
    from policysearch.models import build_model

    mlp = build_model("mlp", digits.input_shape, 10)
    assert score_metric(digits) == "accuracy" and val_score(mlp, digits, 50) == val_accuracy(mlp, digits, 50)


# ---------------------------------------------------------------------- the plan records its task
def test_a_dense_plan_records_its_task_and_rebuilds_the_dense_model(seg):
    teacher = seg[1]
    plan = CompressionPlan.uniform(teacher, torch.zeros(1, *SHAPE), flops_target=0.5, task="segmentation")
    assert plan.task == "segmentation" and plan.to_dict()["task"] == "segmentation"
    again = CompressionPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.task == "segmentation" and again == plan
    assert all(n.task == "segmentation" for n in plan.neighbours(teacher, torch.zeros(1, *SHAPE)))
    # A registered dense model rebuilt from the plan alone returns a map per output channel.
    unet = CompressionPlan.uniform(UNet(SHAPE, 1), torch.zeros(1, *SHAPE), flops_target=0.5, model_name="unet",
                                   task="restoration")
    assert unet.num_classes == 1 and unet.build()(torch.zeros(2, *SHAPE)).shape == (2, 1, 16, 16)
    # A plan without a recorded task (an older file) is rebuilt as its registered model says: maps for a unet.
    old = {k: v for k, v in unet.to_dict().items() if k != "task"}
    assert CompressionPlan.from_dict(old).task is None
    assert CompressionPlan.from_dict(old).build()(torch.zeros(2, *SHAPE)).shape == (2, 1, 16, 16)
    with pytest.raises(ConfigError, match="task"):
        dataclasses.replace(plan, task="detection")


# ---------------------------------------------------------------------- Compress-v0
def test_compress_env_rewards_the_students_miou_and_psnr(seg, rest):
    for (data, teacher), metric in ((seg, "miou"), (rest, "psnr")):
        env = gym.make("policysearch/Compress-v0", teacher=teacher, data=data, batch_size=64, bn_batches=2,
                       flops_target=0.5)
        assert env.unwrapped.reward_metric == metric and env.unwrapped.spec_kwargs["reward_metric"] == metric
        env.reset(seed=0)
        done = False
        while not done:
            _, reward, done, _, info = env.step(np.array([0.0], dtype=np.float32))
        assert set(info["val"]) == {metric} and reward == info["metric"] == info["val"][metric]
        student = env.unwrapped.student
        assert reward == val_score(student, data) and info["flops_fraction"] <= 0.5
        assert CompressionPlan.from_dict(info["plan"]).task == data.task
    with pytest.raises(ConfigError, match="error_log_flops.*psnr"):  # -(1 - PSNR) means nothing
        gym.make("policysearch/Compress-v0", teacher=rest[1], data=rest[0], reward="error_log_flops")


# ---------------------------------------------------------------------- the protocol, in Python
def test_compress_model_runs_the_uniform_plan_and_the_compass_search_on_segmentation(seg, tmp_path):
    from policysearch.protocol.compress import compress_model

    data, teacher = seg
    uniform = compress_model(teacher, data, flops=0.5, effort="quick", controller="uniform", finetune_epochs=0.01,
                             say=lambda line: None)
    report = uniform.report
    assert uniform.chosen == "uniform" and uniform.comparison is None and uniform.artefact.task == "segmentation"
    assert report["metric"] == "miou" and set(report["student"]) >= {"test_miou", "test_pixel_accuracy"}
    assert report["miou_drop_points"] == pytest.approx(
        100 * (report["teacher"]["test_miou"] - report["student"]["test_miou"]))
    assert report["teacher"]["test_miou"] == pytest.approx(evaluate(teacher, data, "test")["miou"], abs=1e-9)
    assert report["student"]["flops"] <= 0.5 * report["teacher"]["flops"]
    # The compass search, really distilled (1 step per neighbour, one round) and scored by validation mIoU.
    lines: list[str] = []
    local = compress_model(teacher, data, flops=0.5, effort="quick", finetune_epochs=0.01, seeds=2,
                           compass={"steps": 1, "rounds": 1, "factor": 1.3}, out=tmp_path / "local", say=lines.append)
    search = local.search["local_search"]
    assert 0.0 <= search["start_val_miou"] <= 1.0 and 0.0 <= search["val_miou"] <= 1.0
    assert "val_accuracy" not in search and len(search["rounds"][0]["candidates"]) >= 2
    assert all(0.0 <= c["val_miou"] <= 1.0 for c in search["rounds"][0]["candidates"])
    assert any("validation miou" in line for line in lines)
    saved = json.loads((tmp_path / "local" / "protocol.json").read_text())
    assert saved["chosen"] == local.chosen and (tmp_path / "local" / "plan.json").is_file()
    assert CompressionPlan.load(tmp_path / "local" / "plan.json").task == "segmentation"
    if local.comparison is not None:  # the search's plan won on validation: compared on test by mIoU
        assert local.comparison["metric"] == "miou"


@pytest.mark.parametrize("task, metric, unit", [("segmentation", "miou", "points"), ("restoration", "psnr", "dB")])
def test_the_comparison_with_uniform_is_by_the_task_metric(seg, rest, monkeypatch, task, metric, unit):
    from policysearch.protocol.compress import compress_model

    data, teacher = seg if task == "segmentation" else rest
    _force_a_move(monkeypatch)
    splits = _choose_searched_on_validation(monkeypatch)
    result = compress_model(teacher, data, flops=0.5, effort="quick", finetune_epochs=0.01, seeds=2,
                            compass={"steps": 1, "rounds": 1}, held_out=0, say=lambda line: None)
    assert result.chosen == "searched" and splits == ["val", "test"]
    comparison = result.comparison
    assert comparison["metric"] == metric and comparison["unit"] == unit
    arms = comparison["arms"]
    for arm in ("searched", "uniform"):
        assert len(arms[arm]["per_seed"]) == 2 and all(math.isfinite(v) for v in arms[arm]["per_seed"])
        if metric == "miou":
            assert all(0.0 <= v <= 1.0 for v in arms[arm]["per_seed"])
        else:
            assert all(v > 5.0 for v in arms[arm]["per_seed"])  # dB: far from a fraction
    factor = 100.0 if unit == "points" else 1.0
    d = comparison["differences"]["uniform"]
    assert d["mean"] == pytest.approx(factor * (arms["searched"]["mean"] - arms["uniform"]["mean"]))
    assert f"{unit} of test {metric}" in result.verdict["line"]
    assert result.report["metric"] == metric and f"{metric}_drop_{unit}" in result.report
    assert result.artefact.task == task


# ---------------------------------------------------------------------- the command
def _mask_folder(root: Path) -> Path:
    from PIL import Image

    data = _squares("segmentation")
    xs = torch.cat([data.x_train, data.x_val, data.x_test])
    ys = torch.cat([data.y_train, data.y_val, data.y_test])
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i, (x, y) in enumerate(zip(xs, ys)):
        Image.fromarray(x[0].numpy(), mode="L").save(root / "images" / f"{i:03d}.png")
        Image.fromarray(y.numpy(), mode="L").save(root / "masks" / f"{i:03d}.png")
    return root


def _compress_command(tmp_path: Path, monkeypatch, capsys, source: list[str], data: object,
                      extra: tuple[str, ...] = ()) -> tuple[dict, str]:
    """`policysearch compress` with a `unet` teacher trained here on `data` (what `source` loads: the same split
    and normalisation); the compass search made to move and the searched plan chosen on validation, so that the
    comparison with uniform on the test split runs (really: 2 paired seeds)."""
    from policysearch.cli.main import main
    from policysearch.models import build_for_data

    torch.manual_seed(0)
    teacher = _teacher(data, build_for_data("unet", data), steps=20)
    torch.save(teacher.state_dict(), tmp_path / "unet.pt")
    _force_a_move(monkeypatch)
    _choose_searched_on_validation(monkeypatch)
    code = main(["compress", "--model", "unet", "--weights", str(tmp_path / "unet.pt"), *source,
                 "--val-size", "20", "--held-out", "0", "--normalize", "standardize", "--flops", "0.5",
                 "--effort", "quick", "--seeds", "2", "--local-steps", "1", "--local-rounds", "1",
                 "--finetune-epochs", "0.01", "--out", str(tmp_path / "run"), "--no-progress", "--json", *extra])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(stdout), err


def test_compress_command_prunes_a_unet_on_a_mask_folder(tmp_path, monkeypatch, capsys):
    from policysearch.data import load_data
    from policysearch.train.checkpoint import load_checkpoint

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _mask_folder(tmp_path / "shapes")
    data = prepare(load_data(folder), val_size=20)
    assert data.task == "segmentation" and len(data.y_train) >= 128
    summary, err = _compress_command(tmp_path, monkeypatch, capsys, ["--data", str(folder)], data)
    out = tmp_path / "run"
    plan = CompressionPlan.load(out / "plan.json")
    assert plan.task == "segmentation" and plan.model == "unet" and plan.flops_fraction <= 0.5
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["comparison"]["metric"] == "miou" and summary["protocol"]["comparison"]["metric"] == "miou"
    student = summary["comparison"]["student"]
    assert 0.0 <= student["test_miou"] <= 1.0 and "test_accuracy" not in student
    assert "test mIoU" in err and f"test miou drop: {summary['comparison']['miou_drop_points']:.2f} points" in err
    rebuilt = load_checkpoint(out / "model.pt").build()  # the pruned U-Net, rebuilt from its plan
    assert rebuilt(torch.zeros(2, *SHAPE)).shape == (2, 3, 16, 16)
    assert sum(p.numel() for p in rebuilt.parameters()) == student["params"]


def test_compress_command_prunes_a_unet_on_restoration_data(tmp_path, monkeypatch, capsys):
    from policysearch.data import load_data

    data = _squares("restoration")
    npz = tmp_path / "denoise.npz"
    np.savez(npz, x_train=torch.cat([data.x_train, data.x_val]).numpy(), y_train=torch.cat([data.y_train,
             data.y_val]).numpy(), x_test=data.x_test.numpy(), y_test=data.y_test.numpy())
    data = prepare(load_data(npz, task="restoration"), val_size=20)
    # The uniform plan alone (the comparison by PSNR is test_the_comparison_with_uniform_is_by_the_task_metric's).
    summary, err = _compress_command(tmp_path, monkeypatch, capsys, ["--data", str(npz), "--task", "restoration"],
                                     data, ("--controller", "uniform"))
    plan = CompressionPlan.load(tmp_path / "run" / "plan.json")
    assert plan.task == "restoration" and plan.num_classes == 1 and plan.flops_fraction <= 0.5
    assert json.loads((tmp_path / "run" / "protocol.json").read_text())["chosen"] == "uniform"
    student = summary["comparison"]["student"]
    assert student["test_psnr"] > 5.0 and "test_ssim" in student
    assert "test PSNR (dB)" in err and f"test psnr drop: {summary['comparison']['psnr_drop_dB']:.2f} dB" in err
