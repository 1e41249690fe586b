"""MLflow tracking (the `mlflow` extra): params, metrics per step and artefacts of a search or a training.

One MLflow run per command; `evaluate`'s trainings are nested runs under it (MLflow's
``mlflow.parentRunId`` tag). Metric names are `policysearch.tracking`'s TensorBoard tags, so both
show the same curves. Params are the flattened settings (dotted keys). At `close` the files the
command wrote (the exported policy / schedule / plan, summary.json, episodes.jsonl, plots, pareto
files, optuna.db) are uploaded as artefacts; the tracking stores themselves are not.

The default store is a SQLite file in the run folder, ``sqlite:///<out>/mlflow.db``, its artefacts
in ``<out>/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db`` shows it).
MLflow 3 refuses a new ``file:`` store unless ``MLFLOW_ALLOW_FILE_STORE=true``; pass any URI
(``--mlflow http://host:5000``) to log elsewhere. The client API is used throughout (no
``mlflow.start_run`` globals), so a tracker never leaks an active run into the caller's code.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.errors import ConfigError
from policysearch.tracking import Tracker, episode_scalars, flatten, require_extra, segment_scalars, train_end_scalars

__all__ = ["SKIP_ARTEFACTS", "MLflowTracker", "default_uri"]

# Never uploaded: the stores themselves (and TensorBoard's own files, which TensorBoard reads).
SKIP_ARTEFACTS = frozenset({"mlflow.db", "mlartifacts", "mlruns", "tensorboard"})
_MAX_PARAM_CHARS = 500  # MLflow 2.x's limit; longer values (op lists) are cut, the full text is in summary.json
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def default_uri(folder: str | Path) -> str:
    """The default store of a run folder: ``sqlite:///<absolute folder>/mlflow.db``."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def _key(name: str) -> str:
    return _BAD_KEY.sub("_", name)[:250]


class MLflowTracker(Tracker):
    """Logs to an MLflow tracking store.

    Args:
        uri: the tracking URI (``sqlite:///...``, ``http://...``, ...).
        experiment: the experiment's name (created when missing).
        run_name: the run's name.
        artefacts: files or folders to upload at `close` (folders recursively, less `SKIP_ARTEFACTS`).
        artifact_location: where a newly created experiment stores artefacts (None: the store's default).

    Raises:
        MissingExtraError: mlflow is not installed.
    """

    def __init__(self, uri: str, experiment: str, run_name: str, artefacts: Sequence[str | Path] = (),
                 artifact_location: str | Path | None = None) -> None:
        require_extra("mlflow", "mlflow", "--mlflow")
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.artefacts = [Path(p) for p in artefacts]
        self.artifact_location = str(artifact_location) if artifact_location else None
        self.client: Any = None
        self.run_id: str | None = None
        self._runs: dict[str, str] = {}  # training name -> run id ("" is the main run)
        self._last_step: dict[str, int] = {}
        self._pending: dict[str, list[Any]] = {}  # per run: metrics held back (a child's segments, sent with its
        # episode's: one write per child training, which a SQLite store commits to disk each time)

    # ------------------------------------------------------------------ runs
    def _main_run(self) -> str:
        if self.run_id is None:
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # "creating tables ..." lines
                logging.getLogger(name).setLevel(logging.WARNING)
            if self.uri.startswith("sqlite:///"):
                Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.client = MlflowClient(tracking_uri=self.uri)
                found = self.client.get_experiment_by_name(self.experiment)
                experiment_id = (found.experiment_id if found is not None else
                                 self.client.create_experiment(self.experiment,
                                                               artifact_location=self.artifact_location))
                self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
            except MlflowException as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ConfigError(f"--mlflow {self.uri}: cannot log there ({first})") from None
            self._runs[""] = self.run_id
            self._experiment_id = experiment_id
        return self.run_id

    def _run(self, name: str) -> str:
        parent = self._main_run()
        if name not in self._runs:
            run = self.client.create_run(self._experiment_id, run_name=name,
                                         tags={"mlflow.parentRunId": parent})
            self._runs[name] = run.info.run_id
        return self._runs[name]

    # ------------------------------------------------------------------ writing
    def _params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_key(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in flatten(params, sep=".").items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _metrics(self, run_id: str, scalars: dict[str, float], step: int, hold: bool = False) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = self._pending.setdefault(run_id, [])
        items += [Metric(_key(k), v, now, int(step)) for k, v in scalars.items()]
        if hold:
            return
        del self._pending[run_id]
        for i in range(0, len(items), 1000):  # and at most 1000 metrics
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    # ------------------------------------------------------------------ events
    def on_search_start(self, params: dict[str, Any]) -> None:
        self._params(self._main_run(), params)

    def on_segment_end(self, step: dict[str, Any], env_step: int) -> None:
        self._metrics(self._main_run(), segment_scalars(step), env_step, hold=True)

    def on_episode_end(self, record: dict[str, Any], totals: dict[str, Any]) -> None:
        self._metrics(self._main_run(), episode_scalars(record, totals), int(totals["child_trainings"]))

    def on_search_end(self, summary: dict[str, Any]) -> None:
        best = summary.get("best") or {}
        final = {"best_score": best.get("score"), "best_val_metric": best.get("val_metric"),
                 "child_trainings": summary.get("child_trainings"), "episodes": summary.get("episodes"),
                 "wall_seconds": summary.get("wall_seconds"), "train_tflops": summary.get("train_flops", 0.0) / 1e12}
        scalars = {f"final/{k}": float(v) for k, v in final.items() if isinstance(v, (int, float))}
        self._metrics(self._main_run(), scalars, int(summary.get("child_trainings") or 0))

    def on_train_start(self, name: str, params: dict[str, Any]) -> None:
        self._params(self._run(name), params)

    def on_epoch_end(self, name: str, epoch: int, record: dict[str, Any]) -> None:
        step = int(record.get("step", epoch))
        self._last_step[name] = step
        scalars = {k: float(v) for k, v in (("train/loss", record.get("train_loss")), ("train/lr", record.get("lr")),
                                            ("train/epoch", epoch)) if isinstance(v, (int, float))}
        self._metrics(self._run(name), scalars, step)

    def on_train_end(self, name: str, result: dict[str, Any]) -> None:
        run_id = self._run(name)
        self._metrics(run_id, train_end_scalars(result), self._last_step.get(name, 0))
        if name:
            self.client.set_terminated(run_id, "FAILED" if result.get("diverged") else "FINISHED")

    def close(self, failed: bool = False) -> None:
        if self.run_id is None:
            return
        for run_id in list(self._pending):  # the segments of a child the search stopped in
            self._metrics(run_id, {}, 0)
        for path in self.artefacts:
            self._upload(path)
        for name, run_id in self._runs.items():
            if name == "" or self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        self.run_id = None

    def _upload(self, path: Path) -> None:
        if path.is_file():
            self.client.log_artifact(self.run_id, str(path))
            return
        if not path.is_dir():
            return
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_ARTEFACTS and not d.startswith("."))
            rel = Path(folder).relative_to(path)
            for name in sorted(files):
                if name in SKIP_ARTEFACTS or name.startswith("."):  # .tmp files of an interrupted write
                    continue
                self.client.log_artifact(self.run_id, str(Path(folder) / name),
                                         artifact_path=None if rel == Path(".") else rel.as_posix())
