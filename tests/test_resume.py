"""A search killed at any point continues with --resume and ends exactly as a run never stopped;
a run folder is locked, never overwritten silently, and always holds a usable artefact."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest
from search_helpers import stable as _stable

from policysearch.errors import ConfigError
from policysearch.search import Budget, read_episodes, run_search


class Crash(Exception):
    pass


class CrashAt(gym.Wrapper):
    """Raises at the `at`-th real env step: what a kill leaves behind, without a subprocess."""

    def __init__(self, env, at: int) -> None:
        super().__init__(env)
        self.at, self.steps = at, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.at:
            raise Crash(f"crash at step {self.at}")
        return self.env.step(action)


def _env(digits, mode: str = "schedule"):
    return gym.make("policysearch/Augment-v0", data=digits, model="mlp", mode=mode,
                    episode_length=1 if mode == "static" else 2, steps_per_segment=2, batch_size=32)


def _artefact(out: Path) -> dict:
    data = json.loads((out / "policy.json").read_text())
    data["provenance"].pop("run_id", None)
    return data


@pytest.mark.parametrize(("controller", "mode", "crash_at"), [
    ("random", "schedule", 3), ("random", "schedule", 6), ("ppo", "schedule", 2), ("ppo", "schedule", 7),
    ("tpe", "static", 3),
])
def test_resume_after_a_crash_equals_an_uninterrupted_run(digits, tmp_path, controller, mode, crash_at) -> None:
    budget = Budget(child_trainings=5)
    whole = run_search(_env(digits, mode), controller, budget, tmp_path / "whole", seed=3, progress=False)
    with pytest.raises(Crash):
        run_search(CrashAt(_env(digits, mode), crash_at), controller, budget, tmp_path / "cut", seed=3,
                   progress=False)
    logged = read_episodes(tmp_path / "cut" / "episodes.jsonl")
    assert len(logged) < 5  # the crash really cut the run short
    with pytest.raises(ConfigError, match="--resume"):  # never continued or overwritten silently
        run_search(_env(digits, mode), controller, budget, tmp_path / "cut", seed=3, progress=False)
    counted = CrashAt(_env(digits, mode), at=10**9)
    resumed = run_search(counted, controller, budget, tmp_path / "cut", seed=3, progress=False, resume=True)
    # No finished child was trained again: only the missing ones (and the one in flight) ran.
    steps_per_child = 1 if mode == "static" else 2
    assert counted.steps <= (5 - len(logged)) * steps_per_child
    assert _stable(read_episodes(tmp_path / "cut" / "episodes.jsonl")) == _stable(whole.episodes)
    assert _stable(resumed.episodes) == _stable(whole.episodes)
    assert _artefact(tmp_path / "cut") == _artefact(tmp_path / "whole")
    run_ids = {e["run_id"] for e in read_episodes(tmp_path / "cut" / "episodes.jsonl")}
    assert len(run_ids) == 1  # one run, resumed, not two runs interleaved


def test_resume_refuses_other_settings(digits, tmp_path) -> None:
    run_search(_env(digits), "random", Budget(child_trainings=1), tmp_path, seed=0, progress=False)
    with pytest.raises(ConfigError, match="seed"):
        run_search(_env(digits), "random", Budget(child_trainings=2), tmp_path, seed=1, progress=False, resume=True)
    # The same settings with a larger budget continue the run.
    result = run_search(_env(digits), "random", Budget(child_trainings=2), tmp_path, seed=0, progress=False,
                        resume=True)
    assert len(result.episodes) == 2


def test_overwrite_replaces_the_run(digits, tmp_path) -> None:
    first = run_search(_env(digits), "random", Budget(child_trainings=2), tmp_path, seed=0, progress=False)
    again = run_search(_env(digits), "random", Budget(child_trainings=1), tmp_path, seed=0, progress=False,
                       overwrite=True)
    assert len(read_episodes(tmp_path / "episodes.jsonl")) == 1
    assert again.summary["run"]["run_id"] != first.summary["run"]["run_id"]


def test_every_finished_episode_leaves_a_usable_artefact_and_a_true_summary(digits, tmp_path) -> None:
    from policysearch.policies.augment import load_policy

    with pytest.raises(Crash):
        run_search(CrashAt(_env(digits), 5), "random", Budget(child_trainings=5), tmp_path, seed=0, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == len(read_episodes(tmp_path / "episodes.jsonl")) == 2
    assert summary["run"]["run_id"] and summary["run"]["command"] and summary["run"]["versions"]["torch"]
    load_policy(str(tmp_path / "policy.json"))  # the best so far, usable now


def test_a_second_search_into_a_locked_folder_is_refused(tmp_path) -> None:
    from policysearch.search.runstore import RunStore

    first = RunStore(tmp_path, {"a": 1})
    try:
        with pytest.raises(ConfigError, match="in use by another search"):
            RunStore(tmp_path, {"a": 1}, resume=True)
    finally:
        first.close()
    RunStore(tmp_path, {"a": 1}, resume=True).close()  # released: the folder can be resumed


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "policysearch.cli", "augment", "--search-only",
            "--dataset", "digits", "--train-size", "200",
            "--model", "mlp", "--controller", "random", "--budget", "6", "--episode-length", "2",
            "--steps-per-segment", "3", "--batch-size", "32", "--out", str(out), "--no-progress", *extra]


def _wait_for_episodes(path: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} episodes")


def test_sigkill_then_resume_from_the_command_line(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(tmp_path / "whole"), check=True, env=env, capture_output=True)
    cut = tmp_path / "cut"
    for kill_after in (1, 3):  # killed twice, at different points, resumed each time
        proc = subprocess.Popen(_cli(cut, *(["--resume"] if kill_after > 1 else [])), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_episodes(cut / "episodes.jsonl", kill_after, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(_cli(cut, "--resume"), check=True, env=env, capture_output=True)
    whole = read_episodes(tmp_path / "whole" / "episodes.jsonl")
    assert _stable(read_episodes(cut / "episodes.jsonl")) == _stable(whole)
    assert _artefact(cut) == _artefact(tmp_path / "whole")


def test_sigint_stops_cleanly_and_says_how_to_resume(tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out), env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_episodes(out / "episodes.jsonl", 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "--resume" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGINT" and summary["episodes"] < 6
    assert summary["episodes"] == len(read_episodes(out / "episodes.jsonl"))
    assert (out / "policy.json").is_file()


def test_sigterm_to_the_process_group_leaves_the_workers_to_finish_the_step(tmp_path) -> None:
    # `timeout`, a job scheduler or a terminal signals the whole process group, workers included:
    # they must leave the stop to the driver, not die and have their children retried.
    out = tmp_path / "run"
    # Children long enough (seconds) that the signal lands while the workers train them.
    proc = subprocess.Popen(_cli(out, "--workers", "2", "--budget", "40", "--steps-per-segment", "800"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_episodes(out / "episodes.jsonl", 2, proc)
    time.sleep(1.0)  # into the next step: both workers are training their children's first segment
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "retrying" not in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["episodes"] < 40
    assert summary["workers"]["failures"] == 0
    assert (out / "policy.json").is_file()


def test_sb3_agent_is_checkpointed_after_each_rollout(digits, tmp_path) -> None:
    import stable_baselines3 as sb3

    with pytest.raises(Crash):  # PPO's first rollout is 8 steps (4 children); the crash comes after it
        run_search(CrashAt(_env(digits), 10), "ppo", Budget(child_trainings=8), tmp_path, seed=0, progress=False)
    assert (tmp_path / "controller.zip").is_file()
    sb3.PPO.load(tmp_path / "controller.zip")  # our own file, from this test: SB3's loader is fine here


def test_a_finished_run_leaves_no_in_flight_file(digits, tmp_path) -> None:
    run_search(_env(digits), "random", Budget(child_trainings=2), tmp_path, seed=0, progress=False)
    assert not (tmp_path / "inflight.pt").exists()


def test_advance_only_reset_moves_the_stream_like_a_full_reset(digits) -> None:
    full, light = _env(digits).unwrapped, _env(digits).unwrapped
    seeds_full = [full.reset(seed=4 if k == 0 else None)[1]["child_seed"] for k in range(3)]
    seeds_light = [light.reset(seed=4 if k == 0 else None, options={"advance_only": True})[1]["child_seed"]
                   for k in range(3)]
    assert seeds_light == seeds_full and light.trainer is None  # same stream, no child built


def _resume_killed_at(out: Path, target: int) -> int:
    """Resume the run in `out` in a forked child that SIGKILLs itself at its `target`-th call of a
    file operation (every point where a resume changes a file); its exit status (0: it finished)."""
    from policysearch.search.runstore import RunStore

    pid = os.fork()
    if pid == 0:  # the child: nothing but the resume, then out, without running the parent's cleanups
        code = 1
        try:
            calls = [0]
            for name in ("fsync", "replace", "rename", "unlink", "ftruncate", "truncate", "write", "open"):
                real = getattr(os, name)

                def hooked(*args, _real=real, **kwargs):
                    calls[0] += 1
                    if calls[0] == target:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return _real(*args, **kwargs)

                setattr(os, name, hooked)
            with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
                RunStore(out, {"a": 1}, resume=True).close()
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def test_a_kill_at_any_moment_of_the_log_repair_leaves_every_logged_line(tmp_path) -> None:
    """A 3,000-line log with a torn last line (what a crash leaves), resumed and SIGKILLed at each
    file operation of the resume in turn: every line logged before stays, byte for byte."""
    from policysearch.search.runstore import RunStore

    out = tmp_path / "run"
    store = RunStore(out, {"a": 1})
    store.close()
    whole = "".join(json.dumps({"episode": i, "metric": i / 3000, "steps": [{"reward": 0.5}], "run_id": store.run_id})
                    + "\n" for i in range(3000)).encode()  # as 3,000 appends would write it, without their fsyncs
    (out / "episodes.jsonl").write_bytes(whole)
    with (out / "episodes.jsonl").open("ab") as f:
        f.write(b'{"episode": 3000, "met')
    for n in range(1, 200):
        status = _resume_killed_at(out, n)
        log = (out / "episodes.jsonl").read_bytes()
        assert log.startswith(whole), f"killed at call {n}: the log holds {len(log.splitlines())} lines"
        if status == 0:
            break
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    else:
        raise AssertionError("the resume never finished")
    assert n > 3 and log == whole  # killed several times; at last the torn line dropped, nothing else
    assert not list(out.glob(".*.tmp*"))


@pytest.mark.parametrize("change", ["older", "other"])
def test_an_in_flight_child_is_restored_or_the_resume_refused(digits, tmp_path, change) -> None:
    """A state written before weight decay was part of the settings is restored as it was; one of other
    settings is refused, never replaced silently by a fresh child."""
    import torch

    budget = Budget(child_trainings=2)
    whole = run_search(_env(digits), "random", budget, tmp_path / "whole", seed=1, progress=False)
    with pytest.raises(Crash):
        run_search(CrashAt(_env(digits), 2), "random", budget, tmp_path / "cut", seed=1, progress=False)
    path = tmp_path / "cut" / "inflight.pt"
    inflight = torch.load(path, weights_only=True)
    settings = inflight["workers"][0]["state"]["settings"]
    if change == "older":
        del settings["weight_decay"], settings["label_smoothing"]
    else:
        settings["steps_per_segment"] = 99
    torch.save(inflight, path)
    if change == "other":
        with pytest.raises(ConfigError, match="other settings|cannot be restored"):
            run_search(_env(digits), "random", budget, tmp_path / "cut", seed=1, progress=False, resume=True)
        return
    resumed = run_search(_env(digits), "random", budget, tmp_path / "cut", seed=1, progress=False, resume=True)
    assert _stable(resumed.episodes) == _stable(whole.episodes)
