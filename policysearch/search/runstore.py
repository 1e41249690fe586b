"""A search's run folder as a durable store: nothing lost, nothing mixed up, resumable.

- ``run.json``: the run id and what defines the run (controller, seed, env settings, artefact
  name); a resumed run must match it, field for field.
- ``episodes.jsonl``: every finished episode, one fsynced line each, carrying the run id; a resumed
  run checks that every line is of its run, and drops a torn last line by an atomic rewrite.
- ``inflight.pt``: the episode in flight: its steps so far and the env's child state after the last
  one (``torch.load(weights_only=True)``), so a resumed run restarts it from its last segment.
- ``.lock``: held (``fcntl.flock``) while a search writes; the operating system releases it when the
  process dies, even by SIGKILL, so a crash never leaves a stale lock behind.

Every file of the folder must be a plain file: a symbolic link (or a folder) in the place of one is
refused before anything is opened, and files are opened with ``O_NOFOLLOW``, so nothing is ever
written through a link planted there. A run is known by its ``run.json`` and the run id in every
line of its log: a folder with episodes but no ``run.json`` is refused, never replaced by a new run.

Resume is replay: the controller runs again from its seed; every step already in the log is
answered from the log (no child is trained twice), then the in-flight child's state is restored
and the search goes on live. Controllers are deterministic for a seed, so a resumed run's log and
artefact equal those of a run that was never stopped.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.files import (
    append_line,
    atomic_path,
    atomic_write,
    check_regular,
    json_safe,
    open_regular,
    read_json,
    remove_stale_temporaries,
    repair_jsonl,
    write_json,
)
from policysearch.policies.artifact import provenance

RUN_FILE, EPISODES_FILE, INFLIGHT_FILE, LOCK_FILE = "run.json", "episodes.jsonl", "inflight.pt", ".lock"
# What a run folder may hold; `--overwrite` removes exactly these (never anything else of the user's).
RUN_FILES = (RUN_FILE, EPISODES_FILE, INFLIGHT_FILE, "summary.json", "search.png", "controller.zip",
             "controller.json", "policy.json", "schedule.json", "schedule.png", "plan.json", "model.pt",
             "comparison.json", "comparison.png", "pareto.json", "pareto.png", "optuna.db")


def now() -> str:
    """The current time, ISO 8601 in UTC."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the policysearch source tree, when it is a git checkout (else None)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# Fields added to the envs' identity after runs were first written (a run that lacks one predates it).
_ADDED_TO_IDENTITY = frozenset({"weight_decay", "label_smoothing", "amp", "divergence_penalty"})
# Where each identity field comes from on the command line, for a refusal that names the option.
_OPTIONS = {"seed": "--seed", "controller": "--controller", "artefact": "the artefact name",
            "env.lr_schedule": "--schedule", "env.amp": "--no-amp", "env.env_id": "the env (--base, --mode)",
            "env.dataset_fingerprint": "the data (--dataset, --data-dir, --train-size)",
            "env.split": "the split (--val-size, --train-size, --test-size, --split-seed)",
            "env.action_space": "--space", "env.augment": "--augment", "env.reward": "--reward",
            "env.tasks": "--tasks"}


def check_run_folder(out: str | Path, resume: bool = False, overwrite: bool = False) -> list[str]:
    """The run files `out` holds; raise ConfigError when there are some and neither `resume` nor
    `overwrite` says what to do with them (a run is never overwritten silently), or when one of
    them (or the lock) is a symbolic link or a folder. Creates nothing."""
    out = Path(out)
    if out.is_dir():
        for name in (LOCK_FILE, *RUN_FILES):
            check_regular(out / name)
    existing = [name for name in RUN_FILES if (out / name).exists()] if out.is_dir() else []
    if existing and not (resume or overwrite):
        shown = ", ".join(existing[:4]) + (", ..." if len(existing) > 4 else "")
        raise ConfigError(f"--out {out} already holds a run ({shown}); "
                          "pass --resume to continue it or --overwrite to replace it")
    return existing


class RunStore:
    """Open `out` for a search defined by `identity` (JSON-able), taking its lock.

    Args:
        out: The run folder (created if missing).
        identity: What defines the run; a resumed run's identity must be equal.
        resume: Continue the run in `out` (its log is replayed); a folder without a run starts afresh.
        overwrite: Replace the run in `out` (only the run's own files are removed).

    Raises:
        ConfigError: Another search holds the folder; `out` holds a run and neither `resume` nor
            `overwrite` is set; or the run in `out` is not the run described by `identity`.
    """

    def __init__(self, out: Path, identity: dict[str, Any], resume: bool = False, overwrite: bool = False) -> None:
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite both given, expected one of them")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._lock()
        try:
            self._open(json_safe(identity), resume, overwrite)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening
    def _lock(self) -> int:
        import fcntl

        fd = open_regular(self.out / LOCK_FILE, os.O_RDWR | os.O_CREAT)  # never through a planted link
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"--out {self.out} is in use by another search ({holder}); "
                              "wait for it to finish or choose another folder") from None
        with contextlib.suppress(OSError):  # who holds it, for the message above: a full disk may refuse it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return fd

    def _open(self, identity: dict[str, Any], resume: bool, overwrite: bool) -> None:
        existing = check_run_folder(self.out, resume, overwrite)
        # The lock is ours, so no writer is alive: what a killed one left half-written goes.
        remove_stale_temporaries(self.out, RUN_FILES)
        if overwrite:
            for name in existing:
                (self.out / name).unlink()
        self.episodes: list[dict[str, Any]] = []
        self.inflight: dict[str, Any] | None = None
        self.torn: str | None = None
        meta_path = self.out / RUN_FILE
        if resume and meta_path.is_file():
            meta = read_json(meta_path)
            if not isinstance(meta, dict) or not isinstance(meta.get("run_id"), str) or \
                    not isinstance(meta.get("identity", {}), dict):
                raise PolicyFormatError(f"{meta_path}: not a run's {RUN_FILE} (fields 'run_id', 'identity')")
            self._check_identity(meta.get("identity", {}), identity)
            self.run_id = meta["run_id"]
            self.started = str(meta.get("started"))
            self.resumes = [*meta.get("resumes", []), now()]
            self.commands = [*meta.get("commands", []), sys.argv]
            if (self.out / EPISODES_FILE).is_file():
                # A torn last line (a kill mid-append) is dropped by an atomic rewrite: a kill during
                # the repair leaves the log as it was, never a shorter one.
                self.episodes, self.torn = repair_jsonl(self.out / EPISODES_FILE)
                if self.torn:
                    print(f"warning: {self.torn}: the episode it held is trained again", file=sys.stderr)
                self._check_log()
            self.inflight = self._load_inflight()
        else:
            if resume:
                held = [name for name in existing if name != EPISODES_FILE or (self.out / name).stat().st_size]
                if held:
                    raise ConfigError(
                        f"--resume: --out {self.out} holds {', '.join(held[:4])}{', ...' if len(held) > 4 else ''} "
                        f"but no {RUN_FILE}, so its run cannot be identified (a partial copy?); copy the run's "
                        f"{RUN_FILE} too, or pass --overwrite instead of --resume to start a new run there")
                print(f"note: --out {self.out} holds no run to resume; starting a new one", file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                (self.out / INFLIGHT_FILE).unlink()

            atomic_write(self.out / EPISODES_FILE, lambda f: None)  # a fresh, empty log
            self.run_id, self.started, self.resumes = uuid.uuid4().hex[:12], now(), []
            self.commands = [sys.argv]
        self.identity = identity
        write_json(meta_path, {"run_id": self.run_id, "started": self.started, "resumes": self.resumes,
                               "commands": self.commands, "identity": identity})

    def _check_log(self) -> None:
        """Every line of the log is an episode of this run (its run id), in order."""
        path = self.out / EPISODES_FILE
        for number, record in enumerate(self.episodes, start=1):
            if not isinstance(record, dict):
                raise PolicyFormatError(f"{path}: record {number} is {type(record).__name__}, expected an episode")
            if record.get("run_id") != self.run_id:
                raise ConfigError(
                    f"--resume: {path}: record {number} is of run {record.get('run_id')!r}, not of this folder's "
                    f"run {self.run_id!r} ({RUN_FILE}): the log mixes runs; move the folder away, or pass "
                    "--overwrite instead of --resume to start a new run there")
            if record.get("episode") != number - 1:
                raise PolicyFormatError(f"{path}: record {number} is episode {record.get('episode')!r}, "
                                        f"expected {number - 1} (records are kept in order)")

    @staticmethod
    def _check_identity(stored: dict[str, Any], given: dict[str, Any]) -> None:
        """Refuse a resume whose settings differ from the run's, naming the first setting that does."""
        differ = _first_difference(stored, given, ())
        if differ is None:
            return
        path, theirs, ours = differ
        dotted = ".".join(path)
        if dotted in _OPTIONS:
            option = _OPTIONS[dotted]
        elif len(path) <= 2:
            option = f"--{path[-1].replace('_', '-')}"
        else:
            option = f"the search space's {'.'.join(path[2:])}" if path[:2] == ("env", "space") else \
                f"the setting {dotted}"
        raise ConfigError(f"--resume: {option}: {_short(theirs)} in the run, {_short(ours)} given; resume with "
                          "the run's settings, or pass --overwrite instead of --resume to start a new run")

    def _load_inflight(self) -> dict[str, Any] | None:
        import torch

        path = self.out / INFLIGHT_FILE
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged in-flight file costs one child, never the run
            print(f"note: {path} is unreadable; its episode restarts from the beginning", file=sys.stderr)
            return None
        if not isinstance(state, dict) or state.get("episodes") != len(self.episodes):
            return None
        return state

    # ------------------------------------------------------------------ writing
    def append_episode(self, record: dict[str, Any]) -> None:
        append_line(self.out / EPISODES_FILE, {**record, "run_id": self.run_id})

    def save_inflight(self, inflight: dict[str, Any]) -> None:
        """Keep the episodes in flight: ``{"episodes": finished so far, "workers": {i: {"steps", "state"}}}``."""
        import torch

        if not inflight.get("workers"):
            with contextlib.suppress(FileNotFoundError):
                (self.out / INFLIGHT_FILE).unlink()
            return
        with atomic_path(self.out / INFLIGHT_FILE) as tmp:
            torch.save({**inflight, "workers": {i: {**json_safe({k: v for k, v in w.items() if k != "state"}),
                                                    "state": w["state"]}
                                                for i, w in inflight["workers"].items()}}, tmp)

    def record(self) -> dict[str, Any]:
        """What summary.json says about the run itself."""

        return {"run_id": self.run_id, "started": self.started, "resumes": self.resumes, "ended": now(),
                "command": sys.argv, "commands": self.commands, "versions": provenance(), "git_commit": git_commit()}

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


_MISSING = object()


def _first_difference(stored: Any, given: Any, path: tuple[str, ...]) -> tuple[tuple[str, ...], Any, Any] | None:
    """The path to the first setting where `stored` and `given` differ, with both values; None if none."""
    if isinstance(stored, dict) and isinstance(given, dict):
        for key in sorted(set(stored) | set(given)):
            if key not in stored and path == ("env",) and key in _ADDED_TO_IDENTITY:
                continue  # a run written before the field was part of the identity
            differ = _first_difference(stored.get(key, _MISSING), given.get(key, _MISSING), (*path, str(key)))
            if differ is not None:
                return differ
        return None
    if stored != given:
        return path, stored, given
    return None


def _short(value: Any, limit: int = 80) -> str:
    if value is _MISSING:
        return "not set"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
