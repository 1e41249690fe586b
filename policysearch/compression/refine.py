"""Coordinate search around a compression plan, scored by what the plan is for: its score after
distillation (the data's task metric: accuracy, mIoU or PSNR; `policysearch.compression.pruning.score_metric`).

Why: at moderate FLOPs targets the cheap episode proxies (adaptive BN, a few distillation steps)
rank plans worse than the plans differ, and the uniform plan beats what an RL or random search
finds with them (README, "Compression"). A few plans next to uniform, each scored by a longer
distillation on paired batch orders, is a search whose score can tell them apart. Compass search
(a pattern search): try each group's channels times and divided by the step, move to the best
neighbour only if fresh batch orders confirm it beats the current plan, else halve the step (in
log space); stop when the step is below `min_factor` or after `rounds` moves. The start plan is
therefore what it returns unless a neighbour wins twice, on the search's and on fresh seeds.

The confirmation can run longer than the search's score (`confirm_steps`, e.g. the final
distillation's length): a short score can favour plans that learn fast over the ones that end best
(Wu et al.'s short-horizon bias), so a move can be made to wait for the length that counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from policysearch.checks import check_int, check_number
from policysearch.compression.pruning import distilled_scores, score_metric
from policysearch.data import DeviceData

DISTILL_BATCH = 128  # images per distillation step in `pruning.distilled_scores` (`distill`'s default)


@dataclass
class Refinement:
    """What `refine_plan` found and what it cost.

    Attributes:
        plan: the chosen plan (the start plan unless a neighbour won; its provenance records the search).
        start_val_score: the start plan's mean validation score on the search seeds.
        val_score: the chosen plan's mean validation score on the search seeds.
        rounds: one record per round: step, candidates with their scores, the best, the
            confirmation and whether the search moved.
        distillations: student trainings run (search and confirmation); images: images they trained on.
        seconds: wall time.
        confirm_steps: distillation steps of each confirmation run.
        metric: what the scores are: the data's task metric ("accuracy", "miou", "psnr"); records name
            their scores after it (``val_accuracy``, ``val_miou``, ...).
    """

    plan: Any
    start_val_score: float
    val_score: float
    rounds: list[dict[str, Any]] = field(default_factory=list)
    distillations: int = 0
    images: int = 0
    seconds: float = 0.0
    confirm_steps: int | None = None
    metric: str = "accuracy"

    @property
    def start_val_accuracy(self) -> float:
        """`start_val_score` under its name from when every student was a classifier."""
        return self.start_val_score

    @property
    def val_accuracy(self) -> float:
        """`val_score` under its name from when every student was a classifier."""
        return self.val_score

    def summary(self) -> dict[str, Any]:
        """JSON-ready record (the plan as its ratios; scores as ``start_val_<metric>``, ``val_<metric>``)."""
        return {"ratios": self.plan.ratios, "kept": self.plan.kept(), f"start_val_{self.metric}": self.start_val_score,
                f"val_{self.metric}": self.val_score, "moves": sum(r["moved"] for r in self.rounds),
                "rounds": self.rounds, "distillations": self.distillations, "images": self.images,
                "confirm_steps": self.confirm_steps, "seconds": round(self.seconds, 1)}


def _mean(values: Sequence[float]) -> float:
    """Mean score; a diverged run (NaN) makes the plan lose every comparison."""
    return -math.inf if any(math.isnan(v) for v in values) else sum(values) / len(values)


class DistilledScore:
    """Mean validation score of plans (the data's task metric, `metric`) after `steps` of distillation on
    given batch orders; a plan (by its kept channels) is trained once per seed, and every training is counted."""

    def __init__(self, teacher: nn.Module, data: DeviceData, steps: int, lr: float = 0.01, workers: int = 1) -> None:
        check_int("steps", steps, 1)
        self.teacher = teacher.to(data.device).eval()
        self.data, self.steps, self.lr, self.workers = data, steps, lr, workers
        self.metric = score_metric(data)
        self.scores: dict[tuple[tuple[str, int], ...], dict[int, float]] = {}  # kept channels -> seed -> score
        self.distillations = 0

    @staticmethod
    def key(plan: Any) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(plan.kept().items()))

    def __call__(self, plans: Sequence[Any], seeds: Sequence[int]) -> list[float]:
        todo = {self.key(p): p for p in plans if any(s not in self.scores.get(self.key(p), {}) for s in seeds)}
        if todo:
            scores = distilled_scores(list(todo.values()), self.teacher, self.data, self.steps, self.lr, list(seeds),
                                      split="val", workers=self.workers)
            for k, row in zip(todo, scores):
                self.scores.setdefault(k, {}).update(zip(seeds, row))
            self.distillations += len(todo) * len(seeds)
        return [_mean([self.scores[self.key(p)][s] for s in seeds]) for p in plans]

    @property
    def images(self) -> int:
        return self.distillations * self.steps * DISTILL_BATCH

    def at(self, steps: int | None) -> DistilledScore:
        """A scorer for the same teacher, data, lr and workers at `steps` (itself when they are its own or None)."""
        if steps is None or steps == self.steps:
            return self
        return DistilledScore(self.teacher, self.data, steps, self.lr, self.workers)


def pick_confirmed(current: Any, candidates: Sequence[Any], score: DistilledScore, seeds: Sequence[int],
                   confirm_seeds: Sequence[int], confirm_score: DistilledScore | None = None) -> dict[str, Any]:
    """The best of `candidates` on `seeds`, kept only if it also beats `current` on the fresh
    `confirm_seeds` (picking the best of many on the same seeds favours luck: the winner's curse),
    scored there by `confirm_score` (default: `score`; e.g. a longer distillation).

    Returns:
        ``{"current": score, "scores": [...], "best": index, "confirmation": {...} (when tried), "moved": bool}``,
        the scores also as ``"accuracies"`` (their name from when every student was a classifier).
    """
    _check_seeds(seeds, confirm_seeds)
    current_score, *scores = score([current, *candidates], seeds)
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    record: dict[str, Any] = {"current": current_score, "scores": scores, "accuracies": scores, "best": best,
                              "moved": False}
    if scores[best] > current_score:
        confirm_current, confirm_best = (confirm_score or score)([current, candidates[best]], confirm_seeds)
        record["confirmation"] = {"current": confirm_current, "best": confirm_best}
        record["moved"] = confirm_best > confirm_current
    return record


def _check_seeds(seeds: Sequence[int], confirm_seeds: Sequence[int]) -> None:
    if not seeds or not confirm_seeds:
        raise ValueError("a search by distillation needs at least one search seed and one confirmation seed")
    if set(seeds) & set(confirm_seeds):
        raise ValueError(f"confirm_seeds {list(confirm_seeds)} must be fresh: not among the search seeds {list(seeds)}")


def refine_plan(start: Any, teacher: nn.Module, data: DeviceData, *, steps: int, seeds: Sequence[int],
                confirm_seeds: Sequence[int], factor: float = 1.5, min_factor: float = 1.2, rounds: int = 3,
                lr: float = 0.01, min_keep: float = 0.1, workers: int = 1,
                progress: Callable[[str], None] | None = None, score: DistilledScore | None = None,
                confirm_steps: int | None = None, confirm_score: DistilledScore | None = None) -> Refinement:
    """Compass search from `start` (a `CompressionPlan` of `teacher`), scored on the validation split by the
    data's task metric (`score_metric`).

    Args:
        start: the plan to improve, e.g. `CompressionPlan.uniform(...)`; every candidate meets its targets.
        teacher: the unpruned network; also the distillation's teacher.
        data: the data set (train split for distillation, validation split for the score).
        steps: distillation steps per candidate and seed.
        seeds: batch orders every candidate is scored on (paired: same order for every plan).
        confirm_seeds: fresh batch orders, none in `seeds`, on which the best neighbour must beat the
            current plan again before the search moves (`pick_confirmed`).
        factor: the first step (> 1): a group's channels times or divided by it.
        min_factor: the search stops when the step falls below it.
        rounds: at most this many moves.
        lr: of the distillation (batches of 128 images, `distill`'s default).
        min_keep: smallest keep ratio of a group.
        workers: distillations at once (processes, one torch thread each).
        progress: called with one line per round.
        score: a `DistilledScore` to share runs with other searches on the same seeds (its steps, lr
            and workers replace these); its earlier runs are not counted in the result's cost.
        confirm_steps: distillation steps of the confirmation (default: `steps`).
        confirm_score: a `DistilledScore` for the confirmation, shared like `score` (its steps replace
            `confirm_steps`).
    """
    check_int("rounds", rounds, 0)
    check_number("factor", factor, 1.0, None, low_open=True)
    check_number("min_factor", min_factor, 1.0, None, low_open=True)
    seeds, confirm_seeds = [int(s) for s in seeds], [int(s) for s in confirm_seeds]
    _check_seeds(seeds, confirm_seeds)
    started = time.perf_counter()
    score = score or DistilledScore(teacher, data, steps, lr, workers)
    confirm_score = confirm_score or score.at(confirm_steps)
    scorers = [score] if confirm_score is score else [score, confirm_score]
    before, images_before = sum(c.distillations for c in scorers), sum(c.images for c in scorers)
    example = torch.zeros(1, *data.input_shape, device=data.device)
    current = start
    metric = score.metric
    (start_score,) = score([start], seeds)
    history: list[dict[str, Any]] = []
    step = float(factor)
    while step >= min_factor and sum(r["moved"] for r in history) < rounds:
        candidates = current.neighbours(score.teacher, example, factor=step, min_keep=min_keep)
        if not candidates:
            break
        pick = pick_confirmed(current, candidates, score, seeds, confirm_seeds, confirm_score)
        best = candidates[pick["best"]]
        record: dict[str, Any] = {
            "factor": step, f"current_val_{metric}": pick["current"],
            "candidates": [{**{k: c.provenance[k] for k in ("group", "factor")}, "kept": c.kept(),
                            f"val_{metric}": a} for c, a in zip(candidates, pick["scores"])],
            "best": {k: best.provenance[k] for k in ("group", "factor")}, "moved": pick["moved"]}
        if "confirmation" in pick:
            record["confirmation"] = pick["confirmation"]
        history.append(record)
        if progress is not None:
            verdict = ("moved" if record["moved"] else
                       "not confirmed on fresh seeds" if "confirmation" in record else "no neighbour is better")
            progress(f"step x{step:.3g}: {len(candidates)} neighbours, current {pick['current']:.4f}, best "
                     f"{record['best']['group']} x{record['best']['factor']:.3g} "
                     f"{pick['scores'][pick['best']]:.4f}: {verdict}")
        if record["moved"]:
            current = best
        else:
            step = math.sqrt(step)
    (final_score,) = score([current], seeds)
    moves = sum(r["moved"] for r in history)
    trained = sum(c.distillations for c in scorers) - before
    images = sum(c.images for c in scorers) - images_before
    provenance = {**current.provenance,
                  "refined": {"from": start.kept(), "steps": score.steps, "confirm_steps": confirm_score.steps,
                              "seeds": seeds, "confirm_seeds": confirm_seeds, "moves": moves,
                              "distillations": trained, f"start_val_{metric}": start_score,
                              f"val_{metric}": final_score}}
    return Refinement(replace(current, provenance=provenance), start_score, final_score, history, trained,
                      images, time.perf_counter() - started, confirm_score.steps, metric)
