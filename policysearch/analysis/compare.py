"""Honest multi-seed comparison of augmentation policies and LR schedules.

Every (policy, schedule) combination is trained from scratch with the same seeds on the same fixed
split; test figures are reported as mean ± std over seeds. The test split is only read here, after
training, never during a search. (One model on one split is `policysearch.train.evaluate`.)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.analysis.stats import paired_bootstrap
from policysearch.data import DeviceData
from policysearch.errors import PolicyFormatError
from policysearch.metrics import HIGHER_IS_BETTER, difference_unit, summarize
from policysearch.models import restore_models, shipped_models
from policysearch.policies.adaptive import resolve_schedule
from policysearch.policies.augment import AugmentPolicy, load_policy
from policysearch.processes import in_processes
from policysearch.tracking import Tracker, replay_training
from policysearch.train.energy import EnergyMeter
from policysearch.train.recipe import train_run
from policysearch.train.robustness import DEFAULT_PGD_STEPS, attack_accuracy
from policysearch.train.trainer import TrainConfig


def _name_field(spec: str) -> str | None:
    """The `name` field of a policy / schedule file (a controller zip: of its JSON sidecar), if any."""
    from policysearch.files import read_json

    path = Path(spec)
    path = path.with_suffix(".json") if path.suffix == ".zip" else path
    try:
        data = read_json(path)
    except PolicyFormatError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def policy_labels(specs: Sequence[str | Any]) -> list[str]:
    """Labels that tell policies (or schedules) apart in a report, one per spec.

    A built-in name is its own label and an object its ``name``; a file is labelled by its ``name``
    field when that is set and no other spec in `specs` would get the same label, else by its path
    as given (two searches both export a policy named "learned": their paths tell them apart).
    """
    labels, is_file = [], []
    for spec in specs:
        text = str(spec)
        if not isinstance(spec, (str, os.PathLike)):  # an object: AugmentPolicy, LearnedSchedule, ...
            labels.append(str(getattr(spec, "name", text)))
            is_file.append(False)
        elif text.endswith((".json", ".zip")) or Path(text).is_file():
            labels.append(_name_field(text) or text)
            is_file.append(True)
        else:  # a built-in name
            labels.append(text)
            is_file.append(False)
    return [str(specs[i]) if is_file[i] and labels.count(label) > 1 else label for i, label in enumerate(labels)]


def policy_label(spec: str | AugmentPolicy) -> str:
    """The label of one policy or schedule given by name, file or object (see `policy_labels`)."""
    return policy_labels([spec])[0]


def compare(
    data: DeviceData,
    base: TrainConfig,
    augments: Sequence[str | AugmentPolicy],
    schedules: Sequence[str],
    seeds: Sequence[int],
    epochs: float,
    progress: bool = True,
    robustness: float | None = None,
    workers: int = 1,
    threads_per_worker: int | None = 1,
    tracker: Tracker | None = None,
) -> list[dict[str, Any]]:
    """Train every combination with every seed.

    Args:
        workers: trainings at once, in worker processes with `threads_per_worker` torch threads
            each (1: in this process, with torch's threads). Each training is seeded, so the
            results do not depend on the order; on the CPU they can differ from a 1-worker run in
            the last bits when the number of torch threads differs (floating-point reductions).
        robustness: an epsilon in [0, 1] pixel units: also report test accuracy under FGSM and PGD
            (`policysearch.train.robustness`) as the test metrics "fgsm_accuracy" and "pgd_accuracy".
        tracker: told of each training once it has finished (`policysearch.tracking`), named
            ``<augment>-<schedule>-seed<k>``.

    Returns:
        One entry per combination: ``{"augment", "schedule", "seeds", "epochs", "runs": [per-seed results],
        "test": {metric: {"mean", "std"}}, "val": {...}, "cost": {"seconds", "images", "train_flops",
        "energy_kwh", "co2e_kg"} (means per run) plus "energy_source", "diverged": count}``; "robustness"
        (the attack settings) when asked.
    """
    policies = [load_policy(a) for a in augments]  # fail on a bad name before training
    scheds = [resolve_schedule(s, base_lr=base.lr or 0.1) for s in schedules]
    policies_named = list(zip(policy_labels(augments), policies))
    scheds_named = list(zip(policy_labels(schedules), scheds))
    jobs = [(aug_name, policy, sched_name, schedule, seed)
            for aug_name, policy in policies_named for sched_name, schedule in scheds_named for seed in seeds]
    total = len(jobs)
    args = [(data, dataclasses.replace(base, seed=seed), epochs, policy, schedule, robustness,
             progress and workers == 1, f"[{k}/{total}] {aug}/{sched} seed {seed}")
            for k, (aug, policy, sched, schedule, seed) in enumerate(jobs, start=1)]
    shipped = {name: spec for name, spec in shipped_models().items() if name == base.model}  # known only here
    runs = in_processes(_one_run, args, workers, threads_per_worker, progress, setup=(restore_models, (shipped,)))
    for (aug, _, sched, _, seed), run in zip(jobs, runs):  # tracking hook: each training's curves, replayed
        replay_training(tracker or Tracker(), f"{aug}-{sched}-seed{seed}", run.pop("history"), run,
                        {"augment": aug, "schedule": sched, "seed": seed, "epochs": epochs,
                         "config": dataclasses.asdict(dataclasses.replace(base, seed=seed))})
    entries = []
    per_entry = len(seeds)
    for start in range(0, total, per_entry):
        aug_name, _, sched_name, _, _ = jobs[start]
        entry = _aggregate(aug_name, sched_name, list(seeds), runs[start:start + per_entry])
        entry["epochs"] = epochs
        if robustness is not None:
            entry["robustness"] = robustness_settings(robustness)
        entries.append(entry)
    return entries


def _one_run(data: DeviceData, config: TrainConfig, epochs: float, policy: Any, schedule: Any,
             robustness: float | None, progress: bool, description: str) -> dict[str, Any]:
    """One training of the comparison: its metrics, cost and energy (a worker process runs it too)."""

    with EnergyMeter(data.device) as meter:
        result = train_run(data, config, epochs, policy, schedule, progress=progress, description=description)
    test = dict(result.test)
    if robustness is not None:
        test.update(_attacked(result, data, robustness))
    return {"seed": config.seed, "val": result.val, "test": test, "cost": {**result.cost, **meter.stop()},
            "diverged": result.diverged, "history": result.history}


def robustness_settings(eps: float) -> dict[str, Any]:
    """What "fgsm_accuracy" / "pgd_accuracy" mean in a report: the attacks' settings."""

    return {"epsilon": eps, "units": "[0, 1] pixels, un-normalised image", "split": "test",
            "pgd_steps": DEFAULT_PGD_STEPS, "pgd_step_size": 2.5 * eps / DEFAULT_PGD_STEPS, "pgd_random_start": True}


def _attacked(result: Any, data: DeviceData, eps: float) -> dict[str, float]:
    if result.diverged:
        return {"fgsm_accuracy": float("nan"), "pgd_accuracy": float("nan")}

    return attack_accuracy(result.model, data, "test", eps, seed=result.config.get("seed", 0))


def _aggregate(augment: str, schedule: str, seeds: list[int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if not r["diverged"]] or runs

    def stats(split: str) -> dict[str, dict[str, float]]:
        names = [m for m in ok[0][split] if m in HIGHER_IS_BETTER or m.endswith("_accuracy")]  # not iou/<class>
        return {m: dict(zip(("mean", "std"), summarize([r[split][m] for r in ok]))) for m in names}

    cost: dict[str, Any] = {k: summarize([float(r["cost"][k]) for r in runs])[0]
                            for k in ("seconds", "images", "train_flops", "energy_kwh", "co2e_kg")}
    cost["energy_source"] = runs[0]["cost"]["energy_source"]
    return {"augment": augment, "schedule": schedule, "seeds": seeds, "test": stats("test"), "val": stats("val"),
            "cost": cost, "diverged": sum(bool(r["diverged"]) for r in runs), "runs": runs}


def seed_values(entry: dict[str, Any], metric: str, split: str = "test") -> list[float]:
    """One entry's `metric` on `split`, one value per seed in seed order: what paired differences
    between arms trained with the same seeds take (`policysearch.analysis.stats.paired_bootstrap`)."""
    return [float(run[split][metric]) for run in entry["runs"]]


#: The columns of a comparison table, in order, as far as the entries hold them: classification's, then
#: segmentation's and restoration's (`policysearch.tasks`), then accuracy under attack.
TABLE_METRICS = ("accuracy", "macro_f1", "ece", "nll", "miou", "pixel_accuracy", "psnr", "ssim", "fgsm_accuracy",
                 "pgd_accuracy")
#: The headline metric of each task, the one whose paired differences get a CI column.
HEADLINE_METRICS = ("accuracy", "miou", "psnr")


def comparison_rows(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows: the test metrics as mean ± std (accuracy / macro F1 / ECE / NLL; mIoU and pixel accuracy;
    PSNR and SSIM; accuracy under attack, when measured); for dense tasks, each arm's paired difference from
    the first arm in the headline metric (mIoU in points, PSNR in dB) with a bootstrap 95 % CI over the
    seeds; then the cost of one run: seconds, training TFLOPs and energy."""
    rows = []
    headline = next((m for m in HEADLINE_METRICS if entries and m in entries[0]["test"]), None)
    for e in entries:
        row: dict[str, Any] = {"augment": e["augment"], "schedule": e["schedule"], "seeds": len(e["seeds"])}
        for metric in TABLE_METRICS:
            if metric in e["test"]:
                s = e["test"][metric]
                row[f"test {metric}"] = f"{s['mean']:.4f} ± {s['std']:.4f}"
        if headline is not None and headline != "accuracy" and len(entries) > 1:
            row[f"{headline} − first arm, {difference_unit(headline)[1]} [95 % CI]"] = _difference_text(
                e, entries[0], headline)
        cost = e["cost"]
        row["train s"] = f"{cost['seconds']:.1f}"
        row["train TFLOPs"] = f"{cost['train_flops'] / 1e12:.3g}"
        if "energy_kwh" in cost:
            row[f"kWh ({cost['energy_source']})"] = f"{cost['energy_kwh']:.3g}"
        if e["diverged"]:
            row["diverged"] = e["diverged"]
        rows.append(row)
    return rows


def _difference_text(entry: dict[str, Any], reference: dict[str, Any], metric: str) -> str:
    """``+0.61 [+0.20, +1.02]``: entry - reference over their paired seeds, in the metric's unit."""
    if entry is reference:
        return ""
    a, b = seed_values(entry, metric), seed_values(reference, metric)
    if len(a) < 2 or len(a) != len(b) or not all(map(math.isfinite, (*a, *b))):
        return "n/a"
    d = paired_bootstrap(a, b)
    factor = difference_unit(metric)[0]
    return f"{factor * d['mean']:+.2f} [{factor * d['low']:+.2f}, {factor * d['high']:+.2f}]"
