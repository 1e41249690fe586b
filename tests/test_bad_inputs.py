"""A table of bad inputs fed to the CLI and the loaders, as a demanding new user would try them.

For each: exit status 2 (a user error), no traceback, one line naming the culprit, nothing written
where nothing should be, nothing executed from a file. Nothing here trains beyond a few steps.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import pytest
import torch

from policysearch.cli import main

TINY = ["--dataset", "digits", "--train-size", "300", "--model", "mlp", "--no-progress"]


class _Payload:
    """Unpickling this object creates the folder `marker`: the evidence that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


# ---------------------------------------------------------------------- crafted files
def _variants(good: Path, field: str, folder: Path) -> dict[str, Path]:
    """`good` truncated, binary, with NaN in `field`, from the future, and a pickle in its place."""
    raw = good.read_bytes()
    data = json.loads(raw)
    out = {}
    for name, content in (
        ("truncated", raw[: len(raw) // 2]),
        ("binary", b"\x00\xff\xfe" + os.urandom(64)),
        ("latin1", "{\"kind\": \"caf\xe9\"}".encode("latin-1")),
        ("nan", json.dumps({**data, field: float("nan")}).encode()),
        ("future", json.dumps({**data, "format_version": 99}).encode()),
        ("not-an-object", b"[1, 2, 3]"),
    ):
        path = folder / f"{good.stem}-{name}.json"
        path.write_bytes(content)
        out[name] = path
    pickled = folder / f"{good.stem}-pickle.json"
    torch.save(_Payload(folder / "ran"), pickled)
    out["pickle"] = pickled
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from policysearch.models import build_model
    from policysearch.policies.augment import builtin_policy
    from policysearch.policies.schedule import LearnedSchedule
    from policysearch.train.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("bad")
    policy = builtin_policy("cropflip").save(folder / "policy.json")
    schedule = LearnedSchedule.from_lrs([0.1, 0.01]).save(folder / "schedule.json")
    made: dict[str, Path] = {"folder": folder, "a_file": folder / "a-file.txt"}
    made["a_file"].write_text("not a folder")
    for kind, (good, field) in {"policy": (policy, "sub_policies"), "schedule": (schedule, "log10_lr")}.items():
        for name, path in _variants(good, field, folder).items():
            made[f"{kind}-{name}"] = path
    good = save_checkpoint(folder / "teacher.pt", build_model("mlp", (1, 8, 8), 10), "mlp", (1, 8, 8), 10)
    made["ckpt-good"] = good
    made["ckpt-truncated"] = folder / "truncated.pt"
    made["ckpt-truncated"].write_bytes(good.read_bytes()[:100])
    made["ckpt-binary"] = folder / "binary.pt"
    made["ckpt-binary"].write_bytes(os.urandom(256))
    made["ckpt-pickle"] = folder / "pickle.pt"
    torch.save({"kind": "policysearch_checkpoint", "info": _Payload(folder / "ran")}, made["ckpt-pickle"])
    raw = torch.load(good, weights_only=True)
    for name, change in (("missing", lambda r: r.pop("input_shape")), ("future", lambda r: r.update(format_version=9)),
                         ("misfit", lambda r: r.update(num_classes=7))):
        copy = dict(raw)
        change(copy)
        made[f"ckpt-{name}"] = folder / f"{name}.pt"
        torch.save(copy, made[f"ckpt-{name}"])
    return made


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_user_error(code: int, out: str, err: str, command: str, culprit: str) -> None:
    assert code == 2, f"exit {code}, expected 2; stderr: {err!r}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith(f"policysearch {command}: error: "), err
    assert culprit in lines[0], f"{culprit!r} not named in {lines[0]!r}"
    assert "|" not in out  # no result table: refused before any training


# ---------------------------------------------------------------------- the table
# (command, extra argv, what the message must name); "{name}" is replaced by files[name].
CASES: list[tuple[str, list[str], str]] = [
    # names
    ("train", ["--dataset", "digitz"], "Did you mean 'digits'"),
    ("train", ["--model", "cnnn"], "Did you mean 'cnn'"),
    ("train", ["--device", "tpu"], "--device"),
    ("train", ["--optimizer", "adam"], "--optimizer"),
    ("train", ["--augment", "trivail"], "Did you mean 'trivial'"),
    ("train", ["--schedule", "cosin"], "Did you mean 'cosine'"),
    ("augment", ["--controller", "pp0"], "Did you mean 'ppo'"),
    ("augment", ["--reward-metric", "acc"], "--reward-metric"),
    ("augment", ["--ops", "rotate,wobble"], "wobble"),
    ("augment", ["--mode", "dynamic"], "--mode"),
    ("compress", ["--checkpoint", "{ckpt-good}", "--criterion", "l3"], "--criterion"),
    # numbers
    *[("train", ["--epochs", v], "--epochs") for v in ("nan", "inf", "-3", "0", "ten")],
    *[("train", ["--val-size", v], "--val-size") for v in ("1.5", "0", "-0.1", "nan")],
    ("train", ["--seed", "-1"], "--seed"),
    ("train", ["--split-seed", "-1"], "--split-seed"),
    ("train", ["--batch-size", "0"], "--batch-size"),
    ("train", ["--lr", "-1"], "--lr"),
    ("train", ["--lr", "nan"], "--lr"),
    ("train", ["--weight-decay", "-1"], "--weight-decay"),
    ("train", ["--label-smoothing", "1"], "--label-smoothing"),
    ("train", ["--train-size", "0"], "--train-size"),
    ("evaluate", ["--seeds", "0"], "--seeds"),
    ("evaluate", ["--augment", ","], "--augment"),
    ("augment", ["--cost-weight", "nan"], "--cost-weight"),
    ("augment", ["--cost-weight", "-1"], "--cost-weight"),
    ("augment", ["--budget", "0"], "--budget"),
    ("augment", ["--budget-time", "inf"], "--budget-time"),
    ("augment", ["--episode-length", "0"], "--episode-length"),
    ("augment", ["--child-seed", "-1"], "--child-seed"),
    ("schedule", ["--lr-min", "1", "--lr-max", "0.1"], "--lr-min"),
    ("compress", ["--checkpoint", "{ckpt-good}", "--finetune-epochs", "-1"], "--finetune-epochs"),
    ("compress", ["--checkpoint", "{ckpt-good}", "--flops", "1.5"], "--flops"),
    ("compress", ["--checkpoint", "{ckpt-good}", "--flops", "0"], "--flops"),
    ("demo", ["--seeds", "0"], "--seeds"),
    ("demo", ["--baselines", "none,bogus"], "bogus"),
    # paths
    ("train", ["--save", "{folder}"], "--save"),
    ("train", ["--save", "{a_file}/model.pt"], "--save"),
    ("train", ["--save", "{folder}/" + "x" * 300], "--save"),
    ("augment", ["--out", "{a_file}"], "--out"),
    ("augment", ["--out", "{folder}/" + "y" * 300], "--out"),
    ("train", ["--augment", "{folder}/missing.json"], "missing.json"),
    ("train", ["--schedule", "{folder}/missing.json"], "missing.json"),
    ("compress", ["--checkpoint", "{folder}/missing.pt"], "missing.pt"),
    # artefacts: every kind truncated / binary / NaN / future / not an object / a pickle
    *[("train", ["--augment", f"{{policy-{v}}}"], f"policy-{v}.json")
      for v in ("truncated", "binary", "latin1", "nan", "future", "not-an-object", "pickle")],
    *[("train", ["--schedule", f"{{schedule-{v}}}"], f"schedule-{v}.json")
      for v in ("truncated", "binary", "latin1", "nan", "future", "not-an-object", "pickle")],
    *[("compress", ["--checkpoint", f"{{ckpt-{v}}}"], f"{v}.pt")
      for v in ("truncated", "binary", "pickle", "missing", "future")],
    ("compress", ["--checkpoint", "{ckpt-misfit}"], "misfit.pt"),
]


@pytest.mark.parametrize(("command", "extra", "culprit"), CASES,
                         ids=[f"{c}-{' '.join(e)[:40]}" for c, e, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(files, capsys, tmp_path, command, extra, culprit) -> None:
    extra = [arg.format(**{k: str(v) for k, v in files.items()}) for arg in extra]
    out_dir = tmp_path / "run"
    argv = [command, *TINY] if command != "compress" else [command, "--no-progress"]
    if command in ("train", "evaluate", "demo"):
        argv += ["--epochs", "1"]
    if command in ("augment", "schedule", "compress", "demo") and "--out" not in extra:
        argv += ["--out", str(out_dir)]
    code, out, err = _run([*argv, *extra], capsys)
    _assert_user_error(code, out, err, command, culprit)
    assert not out_dir.exists(), "a refused command must not create its run folder"
    assert not (files["folder"] / "ran").exists(), "a loader executed code from a file"


def test_a_refused_checkpoint_names_trust_pickle(files, capsys) -> None:
    code, out, err = _run(["compress", "--checkpoint", str(files["ckpt-pickle"]), "--no-progress"], capsys)
    _assert_user_error(code, out, err, "compress", "--trust-pickle")
    assert "weights_only" not in err and "\x1b[" not in err  # not torch's long message with ANSI codes


def test_teacher_and_data_set_of_another_shape(files, capsys, tmp_path, monkeypatch) -> None:
    """A digits teacher (1x8x8) with Fashion-MNIST (1x28x28): refused before any search."""
    from policysearch.data import dataset_status

    if not any(row.get("name") == "fashion-mnist" and row.get("available") for row in dataset_status()):
        pytest.skip("Fashion-MNIST is not on this machine")
    code, out, err = _run(["compress", "--checkpoint", str(files["ckpt-good"]), "--dataset", "fashion-mnist",
                           "--train-size", "200", "--out", str(tmp_path / "run"), "--no-progress"], capsys)
    _assert_user_error(code, out, err, "compress", "shape")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- data folders
def _idx(path: Path, dims: tuple[int, ...], payload: bytes, dtype_code: int = 0x08) -> None:
    header = struct.pack(">HBB", 0, dtype_code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


def _fashion_folder(folder: Path, n: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("t10k", n)):
        _idx(folder / f"{split}-images-idx3-ubyte.gz", (count, 28, 28), bytes(count * 28 * 28))
        _idx(folder / f"{split}-labels-idx1-ubyte.gz", (count,), bytes(i % 10 for i in range(count)))
    return folder


@pytest.mark.parametrize("damage", ["missing-file", "overflow", "zero-images"])
def test_damaged_explicit_data_folder_is_named(tmp_path, capsys, damage) -> None:
    folder = _fashion_folder(tmp_path / "fm")
    images = folder / "train-images-idx3-ubyte.gz"
    if damage == "missing-file":
        images.unlink()
    elif damage == "overflow":
        _idx(images, (2**31, 2**20, 2**20), b"")
    else:
        _idx(images, (0, 28, 28), b"")
    code, _, err = _run(["train", "--dataset", "fashion-mnist", "--data-dir", str(folder), "--no-download",
                           "--epochs", "1", "--model", "mlp", "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err, err
    first = err.strip().splitlines()[0]
    assert first.startswith("policysearch train: error: ") and ("fm" in err or "train-images" in err), err
