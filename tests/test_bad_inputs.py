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
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in raw["state_dict"].items()}
    as_int64 = {k: v.to(torch.int64) for k, v in raw["state_dict"].items()}
    for name, change in (("missing", lambda r: r.pop("input_shape")), ("future", lambda r: r.update(format_version=9)),
                         ("misfit", lambda r: r.update(num_classes=7)),
                         ("nan", lambda r: r.update(state_dict=nan)),
                         ("int64", lambda r: r.update(state_dict=as_int64)),
                         ("hugeshape", lambda r: r.update(input_shape=[1, 100_000, 100_000])),
                         ("manyclasses", lambda r: r.update(num_classes=10**12))):
        copy = dict(raw)
        change(copy)
        made[f"ckpt-{name}"] = folder / f"{name}.pt"
        torch.save(copy, made[f"ckpt-{name}"])
    _crafted_artefacts(folder, policy, schedule, made)
    _crafted_controllers(folder, made)
    made["dangling"] = folder / "dangling"
    made["dangling"].symlink_to(folder / "nowhere")
    return made


def _crafted_artefacts(folder: Path, policy: Path, schedule: Path, made: dict[str, Path]) -> None:
    """A policy nested 10,000 levels deep, with a key twice, a mixup alpha of 1e308, a sub-policy of
    5,000 ops; a schedule with log10_lr 1e308, and one with a number beyond a float's range."""
    good, steady = json.loads(policy.read_text()), json.loads(schedule.read_text())
    lrs = steady["log10_lr"]
    deep = "[" * 10_000 + "]" * 10_000
    texts = {
        "policy-deep": json.dumps({**good, "sub_policies": "X"}).replace('"X"', deep),
        "policy-dupkey": policy.read_text().replace("{", '{"crop": 0.4, ', 1),
        "policy-alpha": json.dumps({**good, "mixup": {"p": 0.5, "alpha": 1e308}}),
        "policy-longsub": json.dumps({**good, "sub_policies": [[["rotate", 0.5, 3]] * 5000]}),
        "schedule-overflow": json.dumps({**steady, "log10_lr": [1e308, *lrs[1:]]}),
        "schedule-bigfloat": json.dumps({**steady, "log10_lr": ["X", *lrs[1:]]}).replace('"X"', "1e400"),
    }
    for name, text in texts.items():
        made[name] = folder / f"{name}.json"
        made[name].write_text(text)


def _crafted_controllers(folder: Path, made: dict[str, Path]) -> None:
    """A closed-loop controller whose weights are NaN, and one whose policy.pth inflates to 40 MiB
    from a zip of kilobytes."""
    import io
    import zipfile

    import gymnasium as gym
    import numpy as np
    import stable_baselines3 as sb3
    from gymnasium import spaces

    from policysearch.policies.adaptive import AdaptiveSchedule, ScheduleSpace

    space = ScheduleSpace(segments=3)

    class Contract(gym.Env):
        observation_space = spaces.Box(-space.clip, space.clip, (space.dim,), np.float32)
        action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    model = sb3.PPO("MlpPolicy", Contract(), n_steps=8, batch_size=8, seed=0, device="cpu",
                    policy_kwargs={"net_arch": [8]})
    for name in ("controller-nan", "controller-bomb"):
        sidecar = AdaptiveSchedule(model, space, "accuracy", "ppo", name=name).save(folder / f"{name}.json")
        zip_path = folder / json.loads(sidecar.read_text())["controller_file"]
        with zipfile.ZipFile(zip_path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        if name == "controller-nan":
            weights = torch.load(io.BytesIO(members["policy.pth"]), weights_only=True)
            weights = {k: torch.full_like(v, float("nan")) for k, v in weights.items()}
            buffer = io.BytesIO()
            torch.save(weights, buffer)
            members["policy.pth"] = buffer.getvalue()
        else:
            members["policy.pth"] = bytes(40 * 2**20)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
            for member, content in members.items():
                z.writestr(member, content)
        made[name] = sidecar


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
    # issue 33: limits on nesting, numbers, sizes, shapes, dtypes; finite weights; no planted links
    ("train", ["--augment", "{policy-deep}"], "policy-deep.json"),
    ("train", ["--augment", "{policy-dupkey}"], "policy-dupkey.json"),
    ("train", ["--augment", "{policy-alpha}"], "mixup.alpha"),
    ("train", ["--augment", "{policy-longsub}"], "5,000 ops"),
    ("train", ["--schedule", "{schedule-overflow}"], "log10_lr[0]"),
    ("train", ["--schedule", "{schedule-bigfloat}"], "schedule-bigfloat.json"),
    ("compress", ["--checkpoint", "{ckpt-nan}"], "NaN"),
    ("compress", ["--checkpoint", "{ckpt-nan}", "--controller", "uniform"], "NaN"),
    ("compress", ["--checkpoint", "{ckpt-int64}", "--controller", "uniform"], "int64"),
    ("compress", ["--checkpoint", "{ckpt-hugeshape}"], "input_shape"),
    ("compress", ["--checkpoint", "{ckpt-manyclasses}"], "num_classes"),
    ("train", ["--schedule", "{controller-nan}"], "NaN"),
    ("train", ["--schedule", "{controller-bomb}"], "inflates"),
    ("augment", ["--out", "{dangling}"], "--out"),
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


def test_an_idx_gzip_bomb_is_refused_before_it_is_inflated(tmp_path, capsys) -> None:
    """A header promising 78 MB behind a gzip stream of kilobytes: refused from the sizes alone."""
    import tracemalloc

    from policysearch.data.formats import read_idx

    folder = _fashion_folder(tmp_path / "fm")
    images = folder / "train-images-idx3-ubyte.gz"
    _idx(images, (100_000, 28, 28), bytes(100_000 * 28 * 28))
    assert images.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(Exception, match="gzip bomb"):
            read_idx(images, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak:,} bytes allocated to refuse it"
    code, _, err = _run(["train", "--dataset", "fashion-mnist", "--data-dir", str(folder), "--no-download",
                         "--epochs", "1", "--model", "mlp", "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err and "train-images" in err.strip().splitlines()[0], err


def test_a_controller_zip_bomb_is_refused_before_it_is_inflated(files) -> None:
    import tracemalloc

    from policysearch.errors import PolicyFormatError
    from policysearch.policies.adaptive import AdaptiveSchedule

    tracemalloc.start()
    try:
        with pytest.raises(PolicyFormatError, match="inflates to 41,943,040 bytes"):
            AdaptiveSchedule.load(files["controller-bomb"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak:,} bytes allocated to refuse it"


@pytest.mark.parametrize("kept", [10**9, -3])
def test_a_plan_whose_kept_channels_disagree_with_its_ratios_is_refused(kept) -> None:
    from policysearch.errors import PolicyFormatError
    from policysearch.policies.compress import CompressionPlan

    data = CompressionPlan(ratios={"a": 0.5}, channels={"a": 8}, model="mlp", input_shape=(1, 8, 8),
                           num_classes=10).to_dict()
    assert CompressionPlan.from_dict(data).kept() == {"a": 4}
    data["kept_channels"] = {"a": kept}
    with pytest.raises(PolicyFormatError, match=r"kept_channels\['a'\]"):
        CompressionPlan.from_dict(data, "plan.json")


@pytest.mark.parametrize("value", ["file", "missing"])
def test_policysearch_data_must_name_a_folder(tmp_path, capsys, monkeypatch, value) -> None:
    target = tmp_path / "data"
    if value == "file":
        target.write_text("not a folder")
    monkeypatch.setenv("POLICYSEARCH_DATA", str(target))
    code, out, err = _run(["train", "--dataset", "fashion-mnist", "--no-download", "--epochs", "1",
                           "--model", "mlp", "--no-progress"], capsys)
    _assert_user_error(code, out, err, "train", "POLICYSEARCH_DATA")


@pytest.mark.parametrize("argv", [["train", "--augment", "missing.json"], ["train", "--epochs", "nan"]],
                         ids=["loader", "parser"])
def test_json_mode_writes_an_error_object(capsys, argv) -> None:
    code, out, err = _run([*argv, *TINY, "--json"], capsys)
    assert code == 2 and "Traceback" not in err
    error = json.loads(out)["error"]  # stdout is still one JSON document
    assert error["exit_code"] == 2 and ("missing.json" in error["message"] or "--epochs" in error["message"])


# ---------------------------------------------------------------------- run folders (issue 33)
RUN = ["--controller", "random", "--budget", "4", "--episode-length", "1", "--steps-per-segment", "2",
       "--batch-size", "32"]


def _search(out: Path, *extra: str) -> list[str]:
    return ["augment", "--search-only", *TINY, *RUN, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_search(out)) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def test_resume_of_a_folder_with_episodes_but_no_run_json_is_refused(finished_run, tmp_path, capsys) -> None:
    out = _copy(finished_run, tmp_path)
    (out / "run.json").unlink()  # a partial copy
    log = (out / "episodes.jsonl").read_bytes()
    code, stdout, err = _run(_search(out, "--resume"), capsys)
    _assert_user_error(code, stdout, err, "augment", "--overwrite")
    assert (out / "episodes.jsonl").read_bytes() == log and not (out / "run.json").exists()


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--weight-decay", "0.5", "--weight-decay: 0.0005 in the run, 0.5 given"),
    ("--label-smoothing", "0.5", "--label-smoothing: 0.0 in the run, 0.5 given"),
    ("--batch-size", "16", "--batch-size: 32 in the run, 16 given"),
])
def test_resume_with_other_training_settings_is_refused_naming_the_option(finished_run, tmp_path, capsys, option,
                                                                            value, named) -> None:
    out = _copy(finished_run, tmp_path)
    log = (out / "episodes.jsonl").read_bytes()
    code, stdout, err = _run(_search(out, "--resume", "--budget", "6", option, value), capsys)
    _assert_user_error(code, stdout, err, "augment", named)
    assert len(err.strip().splitlines()[0]) < 250  # the field, not the env's whole settings
    assert (out / "episodes.jsonl").read_bytes() == log


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
@pytest.mark.parametrize("name", [".lock", "episodes.jsonl"])
def test_a_link_planted_in_the_run_folder_is_refused_and_its_target_untouched(finished_run, tmp_path, capsys,
                                                                             name, resume) -> None:
    victim = tmp_path / "victim.txt"
    # The log's own lines, so that only the link (not the content) can stop a write through it.
    victim.write_bytes((finished_run / "episodes.jsonl").read_bytes() if name == "episodes.jsonl" else b"precious\n")
    before = victim.read_bytes()
    if resume:
        out = _copy(finished_run, tmp_path)
        (out / name).unlink()
    else:
        out = tmp_path / "run"
        out.mkdir()
    (out / name).symlink_to(victim)
    code, stdout, err = _run(_search(out, *(["--resume", "--budget", "6"] if resume else [])), capsys)
    _assert_user_error(code, stdout, err, "augment", name)
    assert victim.read_bytes() == before and (out / name).is_symlink()


@pytest.mark.parametrize("name", [".lock", "episodes.jsonl"])
def test_a_folder_in_place_of_a_run_file_is_refused(finished_run, tmp_path, capsys, name) -> None:
    out = _copy(finished_run, tmp_path)
    (out / name).unlink()
    (out / name).mkdir()
    code, stdout, err = _run(_search(out, "--resume"), capsys)
    _assert_user_error(code, stdout, err, "augment", name)


def test_resume_refuses_a_log_line_of_another_run(finished_run, tmp_path, capsys) -> None:
    out = _copy(finished_run, tmp_path)
    lines = (out / "episodes.jsonl").read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(json.loads(lines[1])["run_id"], "0123456789ab")
    (out / "episodes.jsonl").write_text("".join(lines))
    code, stdout, err = _run(_search(out, "--resume", "--budget", "6"), capsys)
    _assert_user_error(code, stdout, err, "augment", "record 2 is of run '0123456789ab'")


def test_resume_with_a_budget_below_the_log_is_refused(finished_run, tmp_path, capsys) -> None:
    out = _copy(finished_run, tmp_path)
    summary = (out / "summary.json").read_bytes()
    code, stdout, err = _run(_search(out, "--resume", "--budget", "2"), capsys)
    _assert_user_error(code, stdout, err, "augment", "--budget is 2")
    assert (out / "summary.json").read_bytes() == summary


def test_resume_repairs_a_torn_line_with_a_warning_and_removes_stale_temporaries(finished_run, tmp_path,
                                                                                 capsys) -> None:
    out = _copy(finished_run, tmp_path)
    whole = (out / "episodes.jsonl").read_bytes()
    with (out / "episodes.jsonl").open("ab") as f:
        f.write(b'{"episode": 4, "contr')  # what a kill in the middle of an append leaves
    (out / ".inflight.pt.k3j2h1.tmp.pt").write_bytes(b"half a checkpoint")  # a kill during torch.save
    (out / "notes.txt").write_text("mine")
    code, _, err = _run(_search(out, "--resume"), capsys)
    assert code == 0, err
    assert "torn last line" in err
    assert (out / "episodes.jsonl").read_bytes() == whole
    assert not list(out.glob(".*.tmp*")) and (out / "notes.txt").read_text() == "mine"
    commands = json.loads((out / "summary.json").read_text())["run"]["commands"]
    assert len(commands) == 2  # the command that started the run and the one that resumed it


def test_a_line_nested_too_deep_in_the_log_is_one_line_for_compare_and_resume(finished_run, tmp_path,
                                                                             capsys) -> None:
    out = _copy(finished_run, tmp_path)
    lines = (out / "episodes.jsonl").read_text().splitlines(keepends=True)
    lines[1] = '{"episode": 1, "steps": ' + "[" * 10_000 + "]" * 10_000 + "}\n"
    (out / "episodes.jsonl").write_text("".join(lines))
    code, stdout, err = _run(["compare", str(out), "--plot", str(tmp_path / "c.png")], capsys)
    _assert_user_error(code, stdout, err, "compare", "episodes.jsonl: line 2")
    code, stdout, err = _run(_search(out, "--resume"), capsys)
    _assert_user_error(code, stdout, err, "augment", "episodes.jsonl: line 2")


@pytest.mark.parametrize("where", ["log", "inflight", "inflight-torch"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch, where) -> None:
    import errno

    out = tmp_path / "run"
    if where == "log":
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("/episodes.jsonl"):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if "inflight" in str(f):
                Path(f).write_bytes(b"half")
                if where == "inflight":
                    raise OSError(errno.ENOSPC, "No space left on device")
                raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: "
                                   "PytorchStreamWriter failed writing file data/0: file write failed")
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    code, stdout, err = _run(_search(out, "--episode-length", "2"), capsys)
    _assert_user_error(code, stdout, err, "augment", "episodes.jsonl" if where == "log" else "inflight.pt")
    assert "nothing was half-written" in err
    assert not list(out.glob(".*.tmp*"))
    assert (out / "episodes.jsonl").read_bytes() == b""  # the failed append was cut back off
    if where != "log":  # (with a full log, the in-flight file of the first segment is whole and kept)
        assert not (out / "inflight.pt").exists()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_before_the_first_episode_ends_exits_130_with_the_resume_hint(tmp_path, capsys, monkeypatch,
                                                                              sig) -> None:
    import signal

    from policysearch.envs.augment import AugmentEnv

    out = tmp_path / "run"
    real_step = AugmentEnv.step
    sent = []

    def step(self, action):
        if not sent:
            sent.append(sig)
            os.kill(os.getpid(), getattr(signal, sig))
        return real_step(self, action)

    monkeypatch.setattr(AugmentEnv, "step", step)
    code, _, err = _run(_search(out, "--episode-length", "2"), capsys)
    assert code == 130, err
    assert "Traceback" not in err and "raise the budget" not in err
    assert f"stopped by {sig} before any episode finished" in err and "--resume" in err
    monkeypatch.setattr(AugmentEnv, "step", real_step)
    assert main(_search(out, "--episode-length", "2", "--resume")) == 0  # and the run goes on from there


def test_train_stopped_by_sigterm_exits_130_with_a_message(tmp_path) -> None:
    import subprocess
    import sys

    script = (
        "import os, signal, sys, time\n"
        "import policysearch.train.recipe as recipe\n"
        "def stopped(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "recipe.train_run = stopped\n"
        "from policysearch.cli import main\n"
        f"sys.exit(main({['train', *TINY, '--epochs', '1']!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted by SIGTERM" in proc.stderr


def test_nan_controller_weights_are_refused_with_trust_pickle_too(files) -> None:
    from policysearch.errors import PolicyFormatError
    from policysearch.policies.adaptive import AdaptiveSchedule

    with pytest.warns(UserWarning, match="trust_pickle"), pytest.raises(PolicyFormatError, match="NaN"):
        AdaptiveSchedule.load(files["controller-nan"], trust_pickle=True)
