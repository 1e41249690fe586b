"""Learn a `PeakRule` once over a task distribution: a full table of outcomes, then a ridge fit per factor.

What eight LR controllers taught (README, "One LR controller, zero-shot"): the one decision that is
large and consistent is the peak LR — whether the model's default is too low or too high for the
run — and statistics of a run's first segment did not carry over to tasks the controller had not
trained on (they read run length and data set, not the LR's headroom). The rule here decides at the
start, from the curvature at the initial weights (`policysearch.sharpness`: ``lr * lambda_max``, the
quantity the stability bound of gradient descent is written in, the same for every model and data
set) and the run's length, and it never lowers the peak below the default unless told to: its
factors default to 1, sqrt 2 and 2, and factor 1 is the hand-made schedule itself.

The table: for each task drawn from the `TaskSampler` (and a child seed drawn with it), every factor
is trained from the same initial weights and batch order, and the row holds the validation accuracy
of each (the test split is never evaluated) and the start statistics, so a row says exactly what
each factor gains over factor 1 on that task. Rows are appended to ``table.jsonl`` as they finish
(fsynced, one line each): an interrupted run resumes with ``resume=True`` and trains only what is
missing. Tasks run in worker processes, one torch thread each.

The fit: for each factor other than 1, a ridge regression of its gain on the standardised features;
the rule picks the factor of highest predicted gain (factor 1 at 0). The ridge penalty is chosen by
5-fold cross-validation over tasks with the one-standard-error rule (`policysearch.contrib.probe`), the
infinite penalty (one constant factor: the table's best) always a candidate; a leave-one-(data set,
model)-pair-out cross-validation is reported as the estimate for pairs never trained on.

Kinds of nets: a row records the kinds of layers its net is made of (`policysearch.sharpness.layer_kinds`). The
rule decides only for the kinds whose rows show some factor other than 1 gaining on average
(``PeakRule.decides_for``); a net of other kinds, unseen or where raising the peak lost (the table's nets with
batch normalisation), keeps the base schedule without the probe, whose images would buy a decision the table
says to skip. The weights are fitted on every row either way.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from policysearch.contrib.probe import CV_FOLDS, cross_validate, one_standard_error_choice, task_group
from policysearch.data import prepare
from policysearch.errors import ConfigError
from policysearch.files import (
    append_line,
    check_output_dir,
    check_regular,
    repair_jsonl,
    write_json,
)
from policysearch.models import build_for_data, build_model
from policysearch.policies.artifact import provenance, read_json
from policysearch.policies.peak_rule import PeakRule
from policysearch.policies.schedule import named_schedule
from policysearch.sharpness import DEFAULT_IMAGES, DEFAULT_ITERATIONS, START_FEATURES, layer_kinds, start_statistics
from policysearch.train.recipe import train_run
from policysearch.train.trainer import TrainConfig, Trainer

__all__ = ["DEFAULT_FACTORS", "PENALTIES", "ArmFit", "cross_validated_fit", "gains_by_kinds", "learn_peak_rule",
           "row_layer_kinds"]

DEFAULT_FACTORS: tuple[float, ...] = (1.0, math.sqrt(2.0), 2.0)
# Ridge penalties, times the number of rows, on standardised features; inf: a constant factor.
PENALTIES: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, math.inf)
FILES = ("settings.json", "table.jsonl", "rule.json", "summary.json")


class ArmFit:
    """Per factor, gain ≈ w . z + b (ridge on standardised features); the rule picks the highest.

    Args:
        features: ``(tasks, features)``.
        gains: ``(tasks, factors)`` gain of each factor over factor 1 (points; factor 1's column 0).
        reference: The column of factor 1.
        penalty: The ridge penalty (times the number of rows); inf: ``w = 0``, each factor's mean gain.
    """

    def __init__(self, features: np.ndarray, gains: np.ndarray, reference: int, penalty: float) -> None:
        self.mean = features.mean(axis=0)
        std = features.std(axis=0)
        self.std = np.where(std > 1e-12, std, 1.0)
        self.reference = reference
        z = (features - self.mean) / self.std
        n, d = z.shape
        k = gains.shape[1]
        self.weights, self.biases = np.zeros((k, d)), np.zeros(k)
        for j in range(k):
            if j == reference:
                continue
            y = gains[:, j]
            self.biases[j] = y.mean()
            if math.isinf(penalty) or n < 2:
                continue
            zc = z - z.mean(axis=0)
            a = zc.T @ zc + penalty * n * np.eye(d) + 1e-9 * np.eye(d)
            self.weights[j] = np.linalg.solve(a, zc.T @ (y - y.mean()))
            self.biases[j] = y.mean() - float(self.weights[j] @ z.mean(axis=0))

    def scores(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std) @ self.weights.T + self.biases

    def choices(self, features: np.ndarray) -> np.ndarray:
        """Each row's chosen column: the highest score, factor 1 unless another is strictly higher."""
        scores = self.scores(features)
        best = np.argmax(scores, axis=1)
        return np.where(scores[np.arange(len(scores)), best] > scores[:, self.reference], best, self.reference)

    def value(self, features: np.ndarray, gains: np.ndarray) -> float:
        """The mean gain (points) of the rule's choices on a table."""
        return float(gains[np.arange(len(gains)), self.choices(features)].mean())


# ---------------------------------------------------------------------- one task (in a worker)
_DATA: dict[tuple, Any] = {}


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def task_start(task: dict[str, Any], child_seed: int, val_size: int, images: int, iterations: int,
               data_dir: str | None = None) -> tuple[Any, TrainConfig, int, Any]:
    """A table task's data, config, total steps and start statistics (the curvature probe of `images` x
    `iterations` at its initial weights), as its row was built: a row's task and child seed rebuild them."""
    key = (task["dataset"], task["train_size"], val_size, data_dir)
    if key not in _DATA:
        val = min(val_size, 300) if task["dataset"] == "digits" else val_size
        _DATA[key] = prepare(task["dataset"], val_size=val, train_size=task["train_size"], seed=0, data_dir=data_dir)
    data = _DATA[key]
    config = TrainConfig(model=task["model"], batch_size=task["batch_size"], weight_decay=task["weight_decay"],
                         seed=child_seed)
    total = max(1, round(task["epochs"] * max(1, len(data.y_train) // task["batch_size"])))
    model = Trainer(data, config, total_steps=total).model  # the run's initial weights (from the seed alone)
    return data, config, total, start_statistics(model, data, config.seed, images, iterations)


def task_row(job: dict[str, Any]) -> dict[str, Any]:
    """Train every factor on one task from one seed; return the table row (validation only)."""

    start = time.perf_counter()
    task = job["task"]  # a Task's fields (the engine does not import envs/: the caller samples them)
    data, config, total, stats = task_start(task, job["child_seed"], job["val_size"], job["images"], job["iterations"],
                                            job["data_dir"])
    accuracy, diverged, images, flops = [], [], 0, 0.0
    for factor in job["factors"]:
        peak = float(config.lr) * factor
        result = train_run(data, dataclasses.replace(config, lr=peak), task["epochs"],
                           schedule=named_schedule(job["base"], peak), progress=False, test=False)
        diverged.append(bool(result.diverged))
        accuracy.append(0.0 if result.diverged else float(result.val["accuracy"]))
        images += int(result.cost["images"])
        flops += float(result.cost["train_flops"])
    ref = accuracy[job["factors"].index(1.0)]
    label = job["label"]
    return {"index": job["index"], "task": label, "group": task_group(label), "spec": job["task"],
            "child_seed": job["child_seed"], "total_steps": total,
            "layer_kinds": list(layer_kinds(build_for_data(task["model"], data))),
            "features": stats.features(float(config.lr), total, config.optimizer), "start": stats.to_dict(),
            "val_accuracy": accuracy, "diverged": diverged,
            "gains": [round(100.0 * (a - ref), 6) for a in accuracy],
            "train_images": images, "train_flops": flops, "seconds": round(time.perf_counter() - start, 3)}


# ---------------------------------------------------------------------- the whole search
def _jobs(sampler: Any, n_tasks: int, seed: int, settings: dict[str, Any]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(n_tasks):
        task = sampler.sample(rng)
        child_seed = int(rng.integers(0, 2**31 - 1))
        jobs.append({"index": i, "task": task.to_dict(), "label": task.label(), "child_seed": child_seed, **settings})
    return jobs


def cross_validated_fit(features: np.ndarray, gains: np.ndarray, reference: int,
                        groups: list[str]) -> tuple[ArmFit, float, list[dict[str, Any]], list[dict[str, Any]]]:
    """The rule's fit on a table: both cross-validations (5 folds over the rows in their order, and leaving
    one of `groups` out), the penalty chosen on the folds, and the fit at that penalty on every row."""

    def make(f: np.ndarray, g: np.ndarray, penalty: float) -> ArmFit:
        return ArmFit(f, g, reference, penalty)

    folds = [str(i % CV_FOLDS) for i in range(len(features))]
    cv = cross_validate(features, gains, folds, None, PENALTIES, fit=make)
    cv_groups = cross_validate(features, gains, groups, None, PENALTIES, fit=make)
    penalty = one_standard_error_choice(cv)
    return ArmFit(features, gains, reference, penalty), penalty, cv, cv_groups


def row_layer_kinds(row: dict[str, Any]) -> tuple[str, ...]:
    """A table row's layer kinds: its record, or for a row written before rows recorded them, its built-in
    model's, built once (the kinds do not depend on the image size); () for a row with neither."""
    if "layer_kinds" in row:
        return tuple(row["layer_kinds"])
    name = row.get("spec", {}).get("model")
    if name is None:
        return ()
    if name not in _LEGACY_KINDS:
        _LEGACY_KINDS[name] = layer_kinds(build_model(name, (1, 28, 28), 10))
    return _LEGACY_KINDS[name]


_LEGACY_KINDS: dict[str, tuple[str, ...]] = {}


def gains_by_kinds(rows: list[dict[str, Any]], gains: np.ndarray, reference: int) -> dict[tuple[str, ...], dict]:
    """Per kinds of net in the table: its rows, each factor's mean gain, and whether the rule decides for it
    (some factor other than the reference gains on average)."""
    kinds = [row_layer_kinds(r) for r in rows]
    out = {}
    for k in sorted(set(kinds)):
        mean = gains[[x == k for x in kinds]].mean(axis=0)
        out[k] = {"rows": int(sum(x == k for x in kinds)), "mean_gain_per_factor": [round(float(g), 4) for g in mean],
                  "decides": bool(any(mean[j] > 0 for j in range(len(mean)) if j != reference))}
    return out


def fit_rule(rows: list[dict[str, Any]], factors: list[float], base: str, images: int, iterations: int,
             provenance: dict[str, Any] | None = None) -> tuple[PeakRule, dict[str, Any]]:
    """Fit the rule to the table's rows; return it and the fit's report (both cross-validations,
    the chosen penalty, in-sample value, each row's choice)."""
    features = np.array([[r["features"][f] for f in START_FEATURES] for r in rows])
    gains = np.array([r["gains"] for r in rows])
    fit, penalty, cv, cv_pairs = cross_validated_fit(features, gains, factors.index(1.0), [r["group"] for r in rows])
    by_kinds = gains_by_kinds(rows, gains, factors.index(1.0))
    rule = PeakRule(base, factors, list(START_FEATURES), fit.mean, fit.std, fit.weights, fit.biases,
                    features.min(axis=0), features.max(axis=0), images, iterations, provenance,
                    decides_for=[list(k) for k, v in by_kinds.items() if v["decides"]])
    choices = fit.choices(features)

    def jsonable(c: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**x, "penalty": "inf" if math.isinf(x["penalty"]) else x["penalty"]} for x in c]

    groups = sorted({r["group"] for r in rows})
    report = {
        "penalty": "inf" if math.isinf(penalty) else penalty,
        "in_sample_gain": fit.value(features, gains),
        "mean_gain_per_factor": [round(float(g), 4) for g in gains.mean(axis=0)],
        "mean_gain_per_factor_by_pair": {g: [round(float(x), 4) for x in
                                             gains[[r["group"] == g for r in rows]].mean(axis=0)] for g in groups},
        "choices_by_pair": {g: [int(np.sum((choices == j) & np.array([r["group"] == g for r in rows])))
                                for j in range(len(factors))] for g in groups},
        "cross_validation": jsonable(cv), "cross_validation_by_pair": jsonable(cv_pairs),
        "by_layer_kinds": [{"layer_kinds": list(k), **v} for k, v in by_kinds.items()],
    }
    for row, choice in zip(rows, choices):
        row["choice"] = factors[int(choice)]
    return rule, report


def learn_peak_rule(sampler: Any, n_tasks: int, out: str | Path, seed: int = 0, base: str = "onecycle",
                    factors: tuple[float, ...] = DEFAULT_FACTORS, workers: int = 1, threads: int = 1,
                    images: int = DEFAULT_IMAGES, iterations: int = DEFAULT_ITERATIONS, data_dir: str | None = None,
                    resume: bool = False, overwrite: bool = False, progress: bool = True) -> tuple[PeakRule, dict]:
    """Build the table for `n_tasks` tasks of `sampler` (seeded by `seed`) in `out`, fit the rule, and
    write ``rule.json`` and ``summary.json`` there. Returns the rule and the summary.

    Raises:
        ConfigError: For bad settings, an `out` that holds a run without `resume` / `overwrite`, or a
            resumed run whose settings differ.
    """
    from tqdm.auto import tqdm

    factors_list = [float(f) for f in factors]
    if 1.0 not in factors_list or len(factors_list) < 2:
        raise ConfigError(f"factors {factors!r}: need 1 (the base schedule) and at least one other")
    if n_tasks < 2:
        raise ConfigError(f"--n-tasks is {n_tasks}: the fit needs two tasks at least")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite both given, expected one of them")
    out = check_output_dir(out, "--out")
    for name in FILES:
        check_regular(out / name)  # a planted link (or a folder) there is refused: nothing written through it
    existing = [name for name in FILES if (out / name).exists()]
    if existing and not (resume or overwrite):
        raise ConfigError(f"--out {out} already holds a run ({', '.join(existing)}); "
                          "pass --resume to continue it or --overwrite to replace it")
    settings = {"tasks": sampler.to_dict(), "n_tasks": n_tasks, "seed": seed, "base": base, "factors": factors_list,
                "images": images, "iterations": iterations, "val_size": sampler.val_size, "data_dir": data_dir}
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "table.jsonl"
    rows: list[dict[str, Any]] = []
    if resume and (out / "settings.json").is_file():
        saved = read_json(out / "settings.json")
        # The task stream does not depend on its length: a resumed run may extend or cut --n-tasks.
        if not isinstance(saved, dict) or {**saved, "n_tasks": n_tasks} != settings:
            raise ConfigError(f"--resume: the run in {out} has other settings ({out / 'settings.json'})")
        if table_path.is_file():
            rows, torn = repair_jsonl(table_path)  # a torn line dropped atomically, so the next append starts a line
            if torn:
                print(f"note: {torn}", flush=True)
        rows = [r for r in rows if r["index"] < n_tasks]  # rows beyond a cut stay in the file, unused
        write_json(out / "settings.json", settings)
    else:
        for name in existing:
            (out / name).unlink()
        write_json(out / "settings.json", settings)
    done = {r["index"] for r in rows}
    job_settings = {k: settings[k] for k in ("base", "factors", "images", "iterations", "val_size", "data_dir")}
    jobs = [j for j in _jobs(sampler, n_tasks, seed, job_settings) if j["index"] not in done]
    start = time.perf_counter()
    bar = tqdm(total=n_tasks, initial=len(done), desc="peak-rule table", unit="task", disable=not progress)
    try:
        if workers <= 1:
            for job in jobs:
                row = task_row(job)
                append_line(table_path, row)
                rows.append(row)
                bar.update(1)
        else:
            with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(threads,)) as pool:
                futures = [pool.submit(task_row, job) for job in jobs]
                for future in as_completed(futures):
                    row = future.result()
                    append_line(table_path, row)
                    rows.append(row)
                    bar.update(1)
    finally:
        bar.close()
    rows.sort(key=lambda r: r["index"])
    rule, report = fit_rule(rows, factors_list, base, images, iterations,
                            provenance(tasks=sampler.to_dict(), n_tasks=n_tasks, seed=seed))
    rule.save(out / "rule.json")
    summary = {"settings": settings, "tasks_trained": len(rows),
               "child_trainings": len(rows) * len(factors_list),
               "train_images": int(sum(r["train_images"] for r in rows)),
               "train_tflops": round(sum(r["train_flops"] for r in rows) / 1e12, 3),
               "sharpness_images": int(sum(r["start"]["images"] for r in rows)),
               "child_seconds": round(sum(r["seconds"] for r in rows), 1),
               "wall_seconds_this_call": round(time.perf_counter() - start, 1),
               "cpus": os.cpu_count(), "fit": report,
               "rows": [{k: r[k] for k in ("index", "task", "group", "features", "gains", "choice")} for r in rows]}
    write_json(out / "summary.json", summary)
    return rule, summary
