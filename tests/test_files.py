"""Nothing lost, nothing executed: atomic writes, torn JSONL lines, early path checks, and loaders
that never run code from a file (a crafted pickle payload proves each test can fail)."""

from __future__ import annotations

import base64
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.files import (
    MAX_JSON_DEPTH,
    append_line,
    atomic_write,
    check_output_dir,
    check_output_file,
    check_regular,
    parse_json,
    read_jsonl,
    repair_jsonl,
    write_json,
)


class _Payload:
    """Unpickling this object creates the folder `marker`: the evidence that a loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


# ---------------------------------------------------------------------- writes
def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "policy.json"
    write_json(target, {"good": 1})

    def half_then_fail(f):
        f.write(b'{"trunc')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    assert json.loads(target.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"]


def test_written_files_get_the_usual_permissions_not_the_temporary_files(tmp_path: Path) -> None:
    """mkstemp's temporary file is private (0600); what it becomes must be readable as a plain write's
    would be, and a replaced file keeps its own mode."""
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    fresh = write_json(tmp_path / "plan.json", {"a": 1})
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    with open(tmp_path / "plain.json", "w") as f:
        f.write("{}")
    assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)
    os.chmod(fresh, 0o640)
    write_json(fresh, {"a": 2})
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640 and json.loads(fresh.read_text()) == {"a": 2}


def test_write_json_is_strict(tmp_path: Path) -> None:
    path = write_json(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": 2.0}


def test_checkpoint_write_failure_keeps_the_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from policysearch.train.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "m.pt"
    model = torch.nn.Linear(4, 3)
    save_checkpoint(path, model, "mlp", (1, 2, 2), 3)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"\x80\x02trunc")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(path, model, "mlp", (1, 2, 2), 3)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1
    assert load_checkpoint(path).num_classes == 3


def test_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    for i in range(3):
        append_line(path, {"episode": i, "metric": float("nan")})
    with path.open("ab") as f:
        f.write(b'{"episode": 3, "met')
    records, note = read_jsonl(path)
    assert [r["episode"] for r in records] == [0, 1, 2] and records[0]["metric"] is None
    assert note is not None and "torn last line 4" in note


def test_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(PolicyFormatError, match="line 2"):
        read_jsonl(path)


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": 1, "a": 2}', "holds the key 'a' twice"),
    ("[" * 10_000 + "]" * 10_000, f"nested more than {MAX_JSON_DEPTH} levels"),
    ('{"lr": 1e400}', "beyond the range of a float"),
    ('{"lr": NaN}', "holds NaN"),
    ('{"lr": -Infinity}', "holds -Infinity"),
    ('{"a": 1', "not valid JSON"),
])
def test_the_json_reader_refuses_what_is_not_plain_data(text: str, message: str) -> None:
    with pytest.raises(PolicyFormatError, match=f"^f.json: .*{message}"):
        parse_json(text, "f.json")


def test_the_json_reader_counts_brackets_outside_strings_only() -> None:
    brackets = "[" * 1000
    assert parse_json(json.dumps({"a": brackets, "b": [[1]]}), "f.json") == {"a": brackets, "b": [[1]]}
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(nested, "f.json") is not None


def test_a_failed_append_is_cut_back_off(tmp_path: Path, monkeypatch) -> None:
    import errno

    path = tmp_path / "episodes.jsonl"
    append_line(path, {"episode": 0})
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left on device.*nothing was half-written"):
        append_line(path, {"episode": 1})
    assert path.read_bytes() == before


def test_repair_keeps_every_whole_line_and_ends_the_file_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')  # a last line whole but for its newline
    records, torn = repair_jsonl(path)
    assert records == [{"a": 1}, {"a": 2}] and torn is None and path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(b'{"a": 1}\n{"a": ')
    records, torn = repair_jsonl(path)
    assert records == [{"a": 1}] and "torn last line 2" in torn and path.read_bytes() == b'{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["episodes.jsonl"]


def test_links_and_folders_are_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "link").symlink_to(victim)
    (tmp_path / "folder").mkdir()
    for name, message in (("link", "symbolic link"), ("folder", "a folder")):
        with pytest.raises(ConfigError, match=message):
            check_regular(tmp_path / name)
        with pytest.raises(ConfigError, match=message):
            append_line(tmp_path / name, {"a": 1})
    assert victim.read_text() == "precious"
    check_regular(tmp_path / "absent")  # nothing there: nothing to refuse


def test_a_dangling_link_as_output_path_is_refused_early(tmp_path: Path) -> None:
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--out .* symbolic link .* does not exist"):
        check_output_dir(tmp_path / "out", "--out")
    with pytest.raises(ConfigError, match="--save .* symbolic link"):
        check_output_file(tmp_path / "out" / "m.pt", "--save")


# ---------------------------------------------------------------------- early path checks
def test_output_checks_name_the_option(tmp_path: Path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="--save is .*a folder"):
        check_output_file(tmp_path, "--save")
    with pytest.raises(ConfigError, match="--save .* is a file, expected a folder there"):
        check_output_file(a_file / "m.pt", "--save")
    with pytest.raises(ConfigError, match="--out .* a file, expected a folder"):
        check_output_dir(a_file, "--out")
    with pytest.raises(ConfigError, match="too long"):
        check_output_dir(tmp_path / ("x" * 300), "--out")
    assert check_output_file(tmp_path / "new" / "m.pt", "--save") == tmp_path / "new" / "m.pt"
    assert not (tmp_path / "new").exists()  # checking creates nothing


# ---------------------------------------------------------------------- loaders execute nothing
def test_checkpoint_with_a_pickle_payload_is_refused_and_not_run(tmp_path: Path) -> None:
    from policysearch.train.checkpoint import load_checkpoint

    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"kind": "policysearch_checkpoint", "format_version": 1, "info": _Payload(marker)}, path)
    with pytest.raises(PolicyFormatError, match="--trust-pickle"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("field", ["input_shape", "state_dict", "num_classes"])
def test_checkpoint_missing_field_names_it(tmp_path: Path, field: str) -> None:
    from policysearch.train.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(4, 3), "mlp", (1, 2, 2), 3)
    raw = torch.load(path, weights_only=True)
    del raw[field]
    torch.save(raw, path)
    with pytest.raises(PolicyFormatError, match=f"'{field}' is missing"):
        load_checkpoint(path)


def test_checkpoint_weights_that_do_not_fit_are_a_format_error(tmp_path: Path) -> None:
    from policysearch.train.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(4, 3), "mlp", (1, 8, 8), 10)
    with pytest.raises(PolicyFormatError, match="do not fit model 'mlp'"):
        load_checkpoint(path).build()


def _controller(tmp_path: Path):
    import gymnasium as gym
    import stable_baselines3 as sb3
    from gymnasium import spaces

    from policysearch.policies.adaptive import AdaptiveSchedule, ScheduleSpace

    space = ScheduleSpace(segments=3)

    class Contract(gym.Env):
        observation_space = spaces.Box(-space.clip, space.clip, (space.dim,), np.float32)
        action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    model = sb3.PPO("MlpPolicy", Contract(), n_steps=8, batch_size=8, seed=0, device="cpu",
                    policy_kwargs={"net_arch": [8], "log_std_init": -0.5})
    adaptive = AdaptiveSchedule(model, space, "accuracy", "ppo")
    return adaptive, adaptive.save(tmp_path / "controller.json")


def _add_data_entry(zip_path: Path, key: str, value) -> None:
    with zipfile.ZipFile(zip_path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    data = json.loads(files["data"])
    data[key] = value
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)


def test_controller_zip_with_a_pickle_payload_loads_without_running_it(tmp_path: Path) -> None:
    import cloudpickle

    from policysearch.policies.adaptive import AdaptiveSchedule

    adaptive, sidecar = _controller(tmp_path)
    marker = tmp_path / "ran"
    payload = base64.b64encode(cloudpickle.dumps(_Payload(marker))).decode()
    _add_data_entry(tmp_path / "controller.zip", "evil", {":type:": "<class 'object'>", ":serialized:": payload})

    stats = {"progress": 0.5, "train_loss": 1.0, "val_loss": 1.1, "val_metric": 0.6, "lr": 0.1}
    loaded = AdaptiveSchedule.load(sidecar)
    assert not marker.exists()
    assert loaded.lr_for(stats) == pytest.approx(adaptive.lr_for(stats))  # same network, same LR
    # The payload is live: SB3's own loader (the opt-in path) does run it.
    with pytest.warns(UserWarning, match="can run code"):
        AdaptiveSchedule.load(sidecar, trust_pickle=True)
    assert marker.exists()


def test_controller_zip_whose_settings_need_unpickling_is_refused(tmp_path: Path) -> None:
    from policysearch.policies.adaptive import AdaptiveSchedule

    _, sidecar = _controller(tmp_path)
    _add_data_entry(tmp_path / "controller.zip", "policy_kwargs",
                    {":type:": "<class 'dict'>", ":serialized:": "AAAA", "features_extractor_class": "<class 'x'>"})
    with pytest.raises(PolicyFormatError, match="--trust-pickle"):
        AdaptiveSchedule.load(sidecar)


def test_controller_file_must_sit_beside_the_sidecar(tmp_path: Path) -> None:
    from policysearch.policies.adaptive import AdaptiveSchedule

    _, sidecar = _controller(tmp_path)
    data = json.loads(sidecar.read_text())
    data["controller_file"] = "../controller.zip"
    sidecar.write_text(json.dumps(data))
    with pytest.raises(PolicyFormatError, match="controller_file"):
        AdaptiveSchedule.load(sidecar)
