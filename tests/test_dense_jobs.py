"""The jobs on segmentation and restoration data, from the command line and from Python: a user's mask
folder and a restoration .npz written at test time, the U-Net, the task's metrics in every report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policysearch.cli import main
from policysearch.tasks import IGNORE_INDEX


def _scenes(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey squares (class 1, bright) and bars (class 2, dim) on a dark background, with their masks."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size), 20, np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for cls, (h, w), value in ((1, (5, 5), 220), (2, (3, 8), 120)):
            r, c = rng.integers(0, size - h), rng.integers(0, size - w)
            images[i, r:r + h, c:c + w] = value
            masks[i, r:r + h, c:c + w] = cls
    return images, masks


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("dense")
    images, masks = _scenes(64, 16, 0)
    for part, index in (("train", range(48)), ("test", range(48, 64))):
        for sub in ("images", "masks"):
            (root / "scenes" / sub / part).mkdir(parents=True)
        for i in index:
            Image.fromarray(images[i]).save(root / "scenes" / "images" / part / f"{i:03d}.png")
            Image.fromarray(masks[i]).save(root / "scenes" / "masks" / part / f"{i:03d}.png")
    (root / "scenes" / "classes.txt").write_text("background\nsquare\nbar\n")
    clean = images.astype(np.float32) / 255
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 0.15, clean.shape), 0, 1).astype(np.float32)
    np.savez(root / "denoise.npz", x_train=noisy[:48], y_train=clean[:48], x_test=noisy[48:], y_test=clean[48:])
    return root


def _run(argv, capsys):
    code = main([*argv, "--batch-size", "8", "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_augment_on_a_users_mask_folder_exports_a_policy_for_image_and_mask(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, out, err = _run(["augment", "--data", "scenes", "--epochs", "2", "--controller", "random", "--budget", "2",
                           "--episode-length", "2", "--top", "1", "--seeds", "2", "--baselines", "none,cropflip",
                           "--out", "runs/seg"], capsys)
    assert code == 0, err
    protocol = json.loads(Path("runs/seg/protocol.json").read_text())
    assert protocol["comparison"]["metric"] == "miou"
    assert "points of test miou" in protocol["verdict"]["line"] or "keep" in protocol["verdict"]["line"]
    assert "test miou" in out  # the table
    policy_file = json.loads(Path("runs/seg/policy.json").read_text())
    assert policy_file["provenance"]["task"] == "segmentation"
    assert policy_file["provenance"]["classes"] == ["background", "square", "bar"]
    # the search space held no mixup for masks: every candidate's policy loads and runs on image and mask
    from policysearch.policies import load_policy

    policy = load_policy("runs/seg/policy.json")
    assert policy.mixup[0] == 0.0
    x = torch.rand(4, 1, 16, 16)
    mask = torch.randint(0, 3, (4, 16, 16))
    _, out_mask = policy(x, mask, 3, generator=torch.Generator().manual_seed(0), target_kind="mask")
    assert out_mask.shape == mask.shape and bool(((out_mask < 3) | (out_mask == IGNORE_INDEX)).all())


def test_evaluate_reports_miou_with_a_paired_ci_and_psnr(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, out, err = _run(["evaluate", "--data", "scenes", "--epochs", "1", "--augment", "none,cropflip-jitter",
                           "--seeds", "2", "--json"], capsys)
    assert code == 0, err
    assert "miou − first arm, points [95 % CI]" in out + err  # the table (on stderr under --json)
    results = json.loads(out.strip().splitlines()[-1])["results"]
    assert {"miou", "pixel_accuracy"} <= set(results[0]["test"])
    assert 0.0 <= results[0]["test"]["miou"]["mean"] <= 1.0
    code, out, err = _run(["evaluate", "--data", "denoise.npz", "--task", "restoration", "--epochs", "1",
                           "--augment", "none", "--seeds", "1", "--json"], capsys)
    assert code == 0, err
    test = json.loads(out.strip().splitlines()[-1])["results"][0]["test"]
    assert test["psnr"]["mean"] > 10 and 0 < test["ssim"]["mean"] <= 1


def test_schedule_on_restoration_data_compares_psnr_in_db(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, _, err = _run(["schedule", "--data", "denoise.npz", "--task", "restoration", "--epochs", "2",
                           "--controller", "random", "--budget", "2", "--top", "1", "--seeds", "2",
                           "--baselines", "onecycle", "--out", "runs/lr"], capsys)
    assert code == 0, err
    protocol = json.loads(Path("runs/lr/protocol.json").read_text())
    assert protocol["comparison"]["metric"] == "psnr" and protocol["comparison"]["unit"] == "dB"


def test_task_mistakes_give_one_line(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, _, err = _run(["train", "--data", "scenes", "--task", "classification", "--epochs", "1"], capsys)
    assert code == 2 and "segmentation" in err.strip().splitlines()[-1]
    code, _, err = _run(["train", "--dataset", "fashion-scenes", "--task", "restoration", "--epochs", "1"], capsys)
    assert code == 2 and "--task restoration" in err.strip().splitlines()[-1]
    code, _, err = _run(["augment", "--data", "scenes", "--reward-metric", "accuracy", "--epochs", "1",
                         "--out", "runs/bad"], capsys)
    assert code == 2 and "not measured on segmentation" in err.strip().splitlines()[-1]


def test_a_restoration_checkpoint_reloads_as_the_image_to_image_net_it_was(project, capsys, monkeypatch):
    from policysearch.train.checkpoint import load_checkpoint

    monkeypatch.chdir(project)
    code, _, err = _run(["train", "--data", "denoise.npz", "--task", "restoration", "--epochs", "1",
                         "--save", "den.pt"], capsys)
    assert code == 0, err
    checkpoint = load_checkpoint("den.pt")
    assert checkpoint.task == "restoration" and checkpoint.num_classes == 1  # one output channel, grey
    net = checkpoint.build().eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 1, 16, 16)
