"""The protocol every job runs after its search: re-rank on validation with fresh seeds, choose on
validation only among the search's candidates *and* the hand-made baselines, compare the choice with
every baseline on the test split over paired seeds, and say in one line what that showed.

Seeds are kept apart on purpose: the search draws its children's seeds from ``seed``; the re-ranking
uses ``seed + 10_000 + i``, the final comparison ``seed + 20_000 + i``: nobody chooses on the runs
that report the result, and the test split is read only by the final comparison.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policysearch.analysis.report import format_table
from policysearch.analysis.stats import paired_bootstrap
from policysearch.data import DeviceData
from policysearch.files import write_json
from policysearch.metrics import HIGHER_IS_BETTER, difference_unit, reward_value
from policysearch.protocol.effort import Plan
from policysearch.protocol.selection import decide
from policysearch.protocol.trainings import Job, Ledger
from policysearch.train.trainer import TrainConfig, Trainer, training_steps

__all__ = ["RERANK_SEED", "TEST_SEED", "Arm", "ProtocolResult", "choose_on_validation", "compare_on_test",
           "deciding_baseline", "estimate", "interval_text", "paired_comparison", "verdict_line"]

RERANK_SEED, TEST_SEED = 10_000, 20_000


@dataclass(frozen=True)
class Arm:
    """A contender: a searched candidate or a hand-made baseline, as the artefact a run trains with."""

    label: str
    augment: Any
    schedule: Any
    searched: bool
    artefact: Any  # what the command exports if this arm is chosen
    search_score: float | None = None


def choose_on_validation(ledger: Ledger, arms: Sequence[Arm], seeds: int, seed: int, metric: str,
                         finalist_seeds: int | None = None, confidence: float | None = None,
                         ) -> tuple[Arm, list[dict[str, Any]], dict[str, Any] | None]:
    """Train every arm with the same `seeds` fresh seeds (paired), score `metric` on validation, and choose.

    Without held-out images (``ledger.held`` None) the best mean is chosen; a tie goes to a baseline
    (hand-made), then to the earlier arm. With them (`policysearch.protocol.selection`), the validation
    scores pick the best searched candidate and the best baseline, and the held-out images decide between
    the two: the searched one only when the paired bootstrap over those images puts its lead above zero often
    enough (`confidence`: `policysearch.protocol.selection.decide`).
    With `finalist_seeds` above `seeds`, those two are first trained on further fresh seeds (the same for
    both), and the decision averages each held-out image over all of an arm's seeds: fewer trainings than
    re-ranking every arm on as many seeds, and a decision less at the mercy of one seed's luck.

    Returns:
        The chosen arm, one row per arm (label, searched, per-seed validation scores, mean), and the held-out
        decision (None without held-out images): the two arms, their held-out scores and the difference's
        bootstrap, in the task metric's units and in points / dB.
    """
    fresh = [seed + RERANK_SEED + i for i in range(seeds)]
    jobs = [Job(a.label, a.augment, a.schedule, s, test=False) for a in arms for s in fresh]
    results = ledger.run(jobs, "re-ranking on validation")
    rows, runs_of = [], {}
    for k, arm in enumerate(arms):
        runs = results[k * seeds:(k + 1) * seeds]
        runs_of[arm.label] = runs
        scores = [float("-inf") if r["diverged"] else reward_value(r["val"], metric) for r in runs]
        rows.append({"arm": arm.label, "searched": arm.searched, "search_score": arm.search_score,
                     "val_scores": scores, "val_mean": float(np.mean(scores)), "seeds": fresh})
    rank = {k: (rows[k]["val_mean"], not arms[k].searched, -k) for k in range(len(arms))}
    best = max(range(len(arms)), key=rank.__getitem__)
    decision = None
    if ledger.held is not None:
        searched = [k for k in range(len(arms)) if arms[k].searched]
        hand_made = [k for k in range(len(arms)) if not arms[k].searched]
        if searched and hand_made:
            finalists = (max(searched, key=rank.__getitem__), max(hand_made, key=rank.__getitem__))
            extra = [seed + RERANK_SEED + i for i in range(seeds, max(seeds, finalist_seeds or seeds))]
            if extra:  # the finalists only, on seeds the re-ranking did not use
                more = ledger.run([Job(arms[k].label, arms[k].augment, arms[k].schedule, s, test=False)
                                   for k in finalists for s in extra], "held-out decision")
                for j, k in enumerate(finalists):
                    runs_of[arms[k].label] = [*runs_of[arms[k].label], *more[j * len(extra):(j + 1) * len(extra)]]
            best, decision = _held_out_decision(ledger, arms, rows, runs_of, *finalists, seed, confidence)
    for k, row in enumerate(rows):
        row["chosen"] = k == best
    return arms[best], rows, decision


def _held_out_decision(ledger: Ledger, arms: Sequence[Arm], rows: list[dict[str, Any]],
                       runs_of: dict[str, list[dict[str, Any]]], searched: int, hand_made: int,
                       seed: int, confidence: float | None) -> tuple[int, dict[str, Any]]:
    """The best searched arm against the best baseline on the held-out images: (the chosen index, the record)."""
    a, b = arms[searched].label, arms[hand_made].label

    def held(label: str) -> list[Any]:
        return [None if r["diverged"] else r.get("held_out") for r in runs_of[label]]

    decision = decide(ledger.data.task, a, b, held(a), held(b), len(ledger.held.y_val), seed, confidence,
                      seed_error=True)
    decision["seeds"] = len(runs_of[a])  # per arm, averaged image by image
    for k in (searched, hand_made):
        rows[k]["held_out_score"] = (decision["scores"] or {}).get(arms[k].label)
    return (searched if decision["exported"] == a else hand_made), decision


def compare_on_test(ledger: Ledger, chosen: Arm, baselines: Sequence[Arm], seeds: int, seed: int,
                    metric: str = "accuracy") -> dict[str, Any]:
    """The chosen arm and every other arm in `baselines` (the hand-made ones, and the best searched
    candidate when a hand-made one was chosen) trained with `seeds` paired seeds, scored on the test split.

    Returns:
        ``{"seeds", "metric", "arms": {label: {"per_seed", "mean", "std"}}, "differences": {baseline:
        paired bootstrap of chosen - baseline, in points (dB for PSNR: `difference_unit`)}}``.
    """
    paired = [seed + TEST_SEED + i for i in range(seeds)]
    arms = [chosen, *[b for b in baselines if b.label != chosen.label]]
    jobs = [Job(a.label, a.augment, a.schedule, s, test=True) for a in arms for s in paired]
    results = ledger.run(jobs, "comparison on the test split")
    values = {arm.label: [float("nan") if r["diverged"] else float(r["test"][metric])
                          for r in results[k * seeds:(k + 1) * seeds]] for k, arm in enumerate(arms)}
    return paired_comparison(values, chosen.label, paired, metric, {a.label for a in arms if a.searched})


def paired_comparison(values: dict[str, list[float]], chosen: str, seeds: list[int], metric: str,
                      searched: Collection[str]) -> dict[str, Any]:
    """The comparison table of per-seed test scores (`values`: arm -> one score per paired seed, the
    chosen arm among them): each arm's mean and std, and the paired bootstrap of chosen - every other arm
    in points, signed so that positive favours the chosen (None with under two seeds or a diverged run)."""
    table = {label: {"per_seed": v, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                     "searched": label in searched} for label, v in values.items()}
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    factor, unit = difference_unit(metric)
    differences: dict[str, Any] = {}
    for label, other in values.items():
        if label == chosen:
            continue
        mine = values[chosen]
        if len(seeds) >= 2 and all(math.isfinite(v) for v in (*mine, *other)):
            d = paired_bootstrap(mine, other)
            ends = sorted((sign * factor * d["low"], sign * factor * d["high"]))  # a flipped sign swaps the ends
            differences[label] = {"mean": sign * factor * d["mean"], "low": ends[0], "high": ends[1], "n": d["n"]}
        else:
            differences[label] = None
    return {"seeds": seeds, "metric": metric, "unit": unit, "arms": table, "differences": differences}


def interval_text(d: dict[str, Any], n: int, metric: str) -> str:
    """A difference with its CI, as the verdict lines say it."""
    unit = difference_unit(metric)[1]
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] {unit} of test {metric} over {n} paired seeds"


def deciding_baseline(differences: dict[str, dict[str, Any]], means: dict[str, float],
                      higher_is_better: bool = True) -> str | None:
    """The baseline an outcome turns on, as the verdict line names it: the strongest on test (`means`) when
    every interval of chosen - baseline (`differences`, signed so that positive favours the chosen) lies above
    zero; else the one the chosen arm loses to most; else the least resolved (lowest interval end)."""
    if not differences:
        return None
    if all(v["low"] > 0 for v in differences.values()):
        return (max if higher_is_better else min)(differences, key=lambda k: means[k])
    losses = [k for k, v in differences.items() if v["high"] < 0]
    if losses:
        return min(losses, key=lambda k: differences[k]["mean"])
    return min(differences, key=lambda k: differences[k]["low"])


def verdict_line(chosen: Arm, comparison: dict[str, Any] | None, rows: Sequence[dict[str, Any]],
                 decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the protocol showed, in one line (and its parts, for the summary JSON); `decision` is the
    held-out images' (`choose_on_validation`)."""
    best_searched = max((r for r in rows if r["searched"]), key=lambda r: r["val_mean"], default=None)
    if not chosen.searched and decision is not None:
        d = decision["difference"]
        bar = decision.get("bar", "above zero at 95 %")  # decisions saved before the bar was recorded: the 95 % one
        ahead = ""
        if decision.get("seed_differences") is not None:
            ahead = (f", ahead with a probability of {decision['share_ahead']:.2f} over "
                     f"{len(decision['seed_differences'])} seeds")
        elif decision.get("share_ahead") is not None and "resamples" in bar:
            ahead = f", ahead in {100 * decision['share_ahead']:.0f} % of the resamples"
        why = (f"its lead over {chosen.label} on the {decision['images']} held-out validation images was "
               f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}] {decision['unit']} of {decision['metric']}"
               f"{ahead}, not {bar}" if d is not None else decision.get("reason", ""))
        return {"exported": chosen.label, "searched_won": False,
                "line": f"keep {chosen.label}: the search's best candidate did not beat it ({why})"}
    if not chosen.searched:
        searched = (f"the best searched candidate scored {best_searched['val_mean']:.4f} on validation against "
                    f"{chosen.label}'s {next(r['val_mean'] for r in rows if r['arm'] == chosen.label):.4f}"
                    if best_searched else "no searched candidate finished")
        return {"exported": chosen.label, "searched_won": False,
                "line": f"keep {chosen.label}: the search did not beat it on validation ({searched})"}
    if comparison is None:
        return {"exported": chosen.label, "searched_won": True,
                "line": f"{chosen.label} chosen on validation over every baseline (no test comparison: --no-compare)"}
    diffs = {k: v for k, v in comparison["differences"].items() if v is not None}
    metric, n = comparison["metric"], len(comparison["seeds"])
    if not diffs:
        return {"exported": chosen.label, "searched_won": True,
                "line": f"{chosen.label} chosen on validation; too few seeds for a confidence interval on test"}
    # Name the baseline the outcome turns on (`deciding_baseline`), with the CI of the difference.
    others = {k: comparison["arms"][k]["mean"] for k in diffs}
    higher = HIGHER_IS_BETTER.get(metric, True)
    strongest = max(others, key=others.get) if higher else min(others, key=others.get)
    named = deciding_baseline(diffs, others, higher)
    d = diffs[named]
    ci = interval_text(d, n, metric)
    beats_all = all(v["low"] > 0 for v in diffs.values())
    if beats_all:
        line = f"{chosen.label} beats every baseline; the strongest, {named}, by {ci}"
    elif d["high"] < 0:
        line = f"{chosen.label} was chosen on validation but loses to {named} on test: {ci}"
    else:
        line = f"{chosen.label} was chosen on validation; against {named} on test it is not resolved: {ci}"
    return {"exported": chosen.label, "searched_won": True, "beats_every_baseline": beats_all,
            "strongest_baseline": strongest, "named_baseline": named, "difference_points": d, "line": line}


def estimate(data: DeviceData, config: TrainConfig, epochs: float, trainings: int) -> dict[str, Any]:
    """The cost of `trainings` trainings of `epochs`: seconds (from timing three optimizer steps of a
    child here, after one untimed step, and one pass over the validation split), images and training FLOPs."""
    steps = training_steps(data, config.batch_size, epochs)
    with torch.random.fork_rng(devices=[]):
        trainer = Trainer(data, config, total_steps=steps)
        trainer.train_segment(1, None, None)
        started = time.perf_counter()
        trainer.train_segment(3, None, None)
        per_step = (time.perf_counter() - started) / 3
        started = time.perf_counter()
        trainer.evaluate("val")
        per_evaluation = time.perf_counter() - started
    images = trainings * steps * config.batch_size
    return {"trainings": trainings, "steps_per_training": steps,
            "seconds": round((per_step * steps + 2 * per_evaluation) * trainings, 1),
            "images": images, "train_flops": float(images * trainer.train_flops_per_image)}


@dataclass
class ProtocolResult:
    """What a protocol found, chose, compared and cost.

    Attributes:
        job: "augment", "schedule" or "compress".
        artefact: what is exported: the searched artefact or the chosen baseline's.
        chosen: the chosen arm's label ("learned" or a baseline's name).
        verdict: ``{"line": ..., "exported": ..., ...}``.
        ranking: one row per arm of the validation re-ranking.
        comparison: the final paired comparison on the test split (None with ``compare=False``).
        cost: per phase and in all: trainings, images, seconds, training FLOPs.
        plan: the phases' sizes; search: the search's summary.
        decision: the held-out validation images' decision between the best searched candidate and the best
            baseline (`choose_on_validation`; None when no images were held out).
        folder: where it was saved (None until `save`).
    """

    job: str
    artefact: Any
    chosen: str
    verdict: dict[str, Any]
    ranking: list[dict[str, Any]]
    comparison: dict[str, Any] | None
    cost: dict[str, Any]
    plan: Plan
    search: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    folder: Path | None = None
    artefact_name: str = "policy.json"

    def table(self) -> list[dict[str, Any]]:
        """The comparison as table rows: each arm's test mean ± std and its difference from the chosen one."""
        if self.comparison is None:
            return [{"arm": r["arm"], "validation": r["val_mean"], "chosen": "yes" if r["chosen"] else ""}
                    for r in self.ranking]
        metric = self.comparison["metric"]
        rows = []
        for label, arm in self.comparison["arms"].items():
            d = self.comparison["differences"].get(label)
            rows.append({"arm": label + (" (exported)" if label == self.chosen else ""),
                         f"test {metric}": f"{arm['mean']:.4f} ± {arm['std']:.4f}",
                         f"{self.chosen} − arm, {difference_unit(metric)[1]} [95 % CI]": (
                             "" if label == self.chosen else "n/a" if d is None
                             else f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]")})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "chosen": self.chosen, "verdict": self.verdict, "plan": self.plan.__dict__,
                "estimate": self.estimate, "ranking": self.ranking, "held_out": self.decision,
                "comparison": self.comparison,
                "cost": self.cost, "search": self.search, "files": {"artefact": self.artefact_name}}

    def save(self, folder: str | Path) -> Path:
        """Write the exported artefact, ``protocol.json`` and (with matplotlib) ``comparison.png``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.artefact.save(folder / self.artefact_name)
        record = self.to_dict()
        if self.comparison is not None:
            png = plot_protocol(self, folder / "comparison.png")
            record["files"]["plot"] = png.name if png else None
        write_json(folder / "protocol.json", record)
        self.folder = folder
        return folder

    def report(self, say: Callable[[str], None] = print) -> None:
        say(format_table(self.table()))
        say(self.verdict["line"])


def plot_protocol(result: ProtocolResult, path: Path) -> Path | None:
    """Every seed of every arm of the final comparison, mean ± std, the exported arm first."""
    from policysearch.analysis.plots import plot_comparison

    comparison = result.comparison
    assert comparison is not None
    metric = comparison["metric"]
    entries = [{"augment": label, "schedule": "", "seeds": comparison["seeds"],
                "runs": [{"test": {metric: v}} for v in arm["per_seed"]],
                "test": {metric: {"mean": arm["mean"], "std": arm["std"]}}}
               for label, arm in comparison["arms"].items()]
    return plot_comparison(entries, path, title=f"{result.job}: exported {result.chosen}", metrics=(metric,),
                           note=result.verdict["line"][:120])
