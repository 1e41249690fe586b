"""Honest multi-seed comparison of augmentation policies and LR schedules.

Every (policy, schedule) combination is trained from scratch with the same seeds on the same fixed
split; test figures are reported as mean ± std over seeds. The test split is only read here, after
training, never during a search. (One model on one split is `policysearch.evaluate`.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.data import DeviceData
from policysearch.metrics import METRIC_NAMES, summarize
from policysearch.policies.adaptive import resolve_schedule
from policysearch.policies.augment import AugmentPolicy, load_policy
from policysearch.tracking import Tracker
from policysearch.trainer import TrainConfig, train_run


def policy_label(spec: str | AugmentPolicy) -> str:
    """Short name for a policy given by name, file or object."""
    if isinstance(spec, AugmentPolicy):
        return spec.name
    text = str(spec)
    return Path(text).stem if text.endswith(".json") else text


def compare(
    data: DeviceData,
    base: TrainConfig,
    augments: Sequence[str | AugmentPolicy],
    schedules: Sequence[str],
    seeds: Sequence[int],
    epochs: float,
    progress: bool = True,
    tracker: Tracker | None = None,
) -> list[dict[str, Any]]:
    """Train every combination with every seed (each a training named ``<augment>-<schedule>-seed<k>``
    for `tracker`, `policysearch.tracking`).

    Returns:
        One entry per combination: ``{"augment", "schedule", "seeds", "runs": [per-seed results],
        "test": {metric: {"mean", "std"}}, "val": {...}, "cost": {"seconds", "images", "train_flops"}
        (means), "diverged": count}``.
    """
    policies = [(policy_label(a), load_policy(a)) for a in augments]  # fail on a bad name before training
    scheds = [(policy_label(s), resolve_schedule(s, base_lr=base.lr or 0.1)) for s in schedules]
    entries = []
    total = len(policies) * len(scheds) * len(seeds)
    k = 0
    for aug_name, policy in policies:
        for sched_name, schedule in scheds:
            runs = []
            for seed in seeds:
                k += 1
                config = dataclasses.replace(base, seed=seed)
                result = train_run(
                    data, config, epochs, policy, schedule, progress=progress,
                    description=f"[{k}/{total}] {aug_name}/{sched_name} seed {seed}",
                    tracker=tracker, run_name=f"{aug_name}-{sched_name}-seed{seed}",
                )
                runs.append({"seed": seed, "val": result.val, "test": result.test, "cost": result.cost,
                             "diverged": result.diverged})
            entries.append(_aggregate(aug_name, sched_name, list(seeds), runs))
    return entries


def _aggregate(augment: str, schedule: str, seeds: list[int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if not r["diverged"]] or runs

    def stats(split: str) -> dict[str, dict[str, float]]:
        return {m: dict(zip(("mean", "std"), summarize([r[split][m] for r in ok]))) for m in METRIC_NAMES}

    cost = {k: summarize([float(r["cost"][k]) for r in runs])[0] for k in ("seconds", "images", "train_flops")}
    return {"augment": augment, "schedule": schedule, "seeds": seeds, "test": stats("test"), "val": stats("val"),
            "cost": cost, "diverged": sum(bool(r["diverged"]) for r in runs), "runs": runs}


def comparison_rows(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows: test accuracy / macro F1 / ECE / NLL as mean ± std, and training time."""
    rows = []
    for e in entries:
        row: dict[str, Any] = {"augment": e["augment"], "schedule": e["schedule"], "seeds": len(e["seeds"])}
        for metric in ("accuracy", "macro_f1", "ece", "nll"):
            s = e["test"][metric]
            row[f"test {metric}"] = f"{s['mean']:.4f} ± {s['std']:.4f}"
        row["train s"] = f"{e['cost']['seconds']:.1f}"
        if e["diverged"]:
            row["diverged"] = e["diverged"]
        rows.append(row)
    return rows
