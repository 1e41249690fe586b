"""The trainings a protocol runs after its search, kept in a ledger so that a cut run resumes.

Every re-ranking and comparison training is one `Job` (an augmentation policy and an LR schedule,
trained from one seed for the target length): its result is appended to ``trainings.jsonl`` (one
fsynced line) as soon as it is known, keyed by the job's content, so a resumed protocol trains only
what is missing and a changed policy or setting is never mistaken for a finished one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policysearch.files import append_line, json_dumps, read_jsonl
from policysearch.models import restore_models, shipped_models
from policysearch.processes import in_processes
from policysearch.train.evaluate import image_stats
from policysearch.train.recipe import train_run
from policysearch.train.trainer import TrainConfig

__all__ = ["Job", "Ledger"]


@dataclass(frozen=True)
class Job:
    """One training: `arm` (a label), its augmentation policy and LR schedule objects, a seed, and whether
    the test split is scored (only the final comparison scores it)."""

    arm: str
    augment: Any
    schedule: Any
    seed: int
    test: bool

    def key(self, setting: str) -> str:
        """What identifies the job's result: the arm, the content of its artefacts, seed, split, setting."""
        content = json_dumps([_content(self.augment), _content(self.schedule), setting], sort_keys=True)
        digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        return f"{self.arm}|{digest}|seed={self.seed}|{'test' if self.test else 'val'}"


def _content(obj: Any) -> Any:
    if obj is None or isinstance(obj, str):
        return obj
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if callable(to_dict) else repr(obj)


def _train(data: Any, config: TrainConfig, epochs: float, job: Job, held: Any = None) -> dict[str, Any]:
    """One training of the ledger (module level: a worker process runs it). With `held` (the held-out
    validation images) a validation job also records each held-out image's share of the task's metric."""
    result = train_run(data, dataclasses.replace(config, seed=job.seed), epochs, job.augment, job.schedule,
                       progress=False, test=job.test)
    record = {"arm": job.arm, "seed": job.seed, "val": result.val, "test": result.test if job.test else None,
              "cost": result.cost, "diverged": result.diverged}
    if held is not None and not job.test and not result.diverged and result.model is not None:
        stats = image_stats(result.model, held, "val", batch_size=config.eval_batch_size, amp=config.amp)
        record["held_out"] = stats.tolist()
    return record


class Ledger:
    """The protocol's trainings, done or to do, in `folder`/trainings.jsonl (None: in memory only).

    Args:
        folder: the protocol's folder.
        data, config, epochs: what every job trains on, with, and for how long.
        workers: trainings at once (worker processes, one torch thread each).
        progress: called with one line per finished batch of trainings.
        held: the held-out validation images (`policysearch.protocol.selection.hold_out`): every validation
            job's record then carries ``held_out``, each of those images' rows of the task's metric.
    """

    def __init__(self, folder: Path | None, data: Any, config: TrainConfig, epochs: float, workers: int = 1,
                 progress: Callable[[str], None] | None = None, held: Any = None) -> None:
        self.path = folder / "trainings.jsonl" if folder is not None else None
        self.data, self.config, self.epochs, self.workers, self.held = data, config, epochs, workers, held
        self.progress = progress or (lambda line: None)
        self.setting = json_dumps({"data": data.fingerprint, "split": data.split, "epochs": epochs,
                                   "config": dataclasses.asdict(config)}, sort_keys=True)
        self.done: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.is_file():
            records, torn = read_jsonl(self.path)
            if torn:
                warnings.warn(torn, stacklevel=2)
            self.done = {r["key"]: r for r in records if isinstance(r, dict) and "key" in r}

    def run(self, jobs: Sequence[Job], phase: str) -> list[dict[str, Any]]:
        """The results of `jobs`, in order: those in the ledger read back, the others trained now."""
        keyed = [(job, job.key(self.setting)) for job in jobs]
        todo = [(job, key) for job, key in keyed if key not in self.done]
        if len(todo) < len(keyed):
            self.progress(f"{phase}: {len(keyed) - len(todo)} of {len(keyed)} trainings read back from the ledger")
        shipped = {n: s for n, s in shipped_models().items() if n == self.config.model}
        if todo:
            self.progress(f"{phase}: {len(todo)} trainings ...")
        report_every = max(self.workers, len(todo) // 4)
        finished = 0

        def save(i: int, result: dict[str, Any]) -> None:  # as each training lands: a cut run loses none
            nonlocal finished
            record = {"key": todo[i][1], "phase": phase, **result}
            self.done[todo[i][1]] = record
            if self.path is not None:
                append_line(self.path, record)
            finished += 1
            if finished == len(todo) or finished % report_every == 0:
                self.progress(f"{phase}: {finished} of {len(todo)} trainings done")

        in_processes(_train, [(self.data, self.config, self.epochs, job, self.held) for job, _ in todo],
                     max(1, min(self.workers, len(todo))), setup=(restore_models, (shipped,)), desc=phase,
                     on_result=save)
        return [self.done[key] for _, key in keyed]

    def summary(self) -> dict[str, Any]:
        """Trainings, images, seconds and training FLOPs of every job in the ledger."""
        costs = [r.get("cost") or {} for r in self.done.values()]
        return {"trainings": len(costs), "images": sum(int(c.get("images", 0)) for c in costs),
                "seconds": round(sum(float(c.get("seconds", 0.0)) for c in costs), 2),
                "train_flops": sum(float(c.get("train_flops", 0.0)) for c in costs)}

