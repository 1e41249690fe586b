"""`compress_model`: the compression protocol on your teacher and data, one call.

uniform plan (one keep ratio everywhere, meeting every target) -> a search from it (the compass search
by default, scored by distillation on validation, each move confirmed on fresh seeds) -> the searched
plan and uniform distilled with the same fresh seeds, the better on validation chosen -> both
distilled with paired seeds for the final length and scored on the test split -> the chosen plan
exported and its student distilled, with a one-line verdict. The CLI's ``compress`` calls it.

Every score is the data's task metric (`policysearch.compression.pruning.score_metric`): accuracy of a
classifier, mIoU of a segmentation (a ``unet`` teacher, say), PSNR of a restoration; differences are
reported in points for fractions and in dB for PSNR (`policysearch.metrics.difference_unit`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policysearch.compression.distill import finish
from policysearch.compression.pruning import distilled_image_stats, distilled_scores, score_metric
from policysearch.compression.teacher import check_teacher
from policysearch.data import DeviceData
from policysearch.errors import ConfigError
from policysearch.files import check_output_dir
from policysearch.policies.compress import CompressionPlan
from policysearch.protocol.core import RERANK_SEED, TEST_SEED, ProtocolResult, interval_text, paired_comparison
from policysearch.protocol.effort import plan_for
from policysearch.protocol.selection import HELD_OUT, HELD_OUT_SEED, decide, hold_out, score_rows
from policysearch.search.controllers.base import ControllerSettings, PlanSearcher
from policysearch.search.controllers.registry import controller_info, controller_names, make_controller
from policysearch.train.trainer import training_steps

__all__ = ["COMPASS_EFFORT", "CompressionResult", "compress_model"]

#: The compass search's settings per effort (the CLI's --local-* options override them).
COMPASS_EFFORT: dict[str, dict[str, Any]] = {
    "quick": {"steps": 100, "seeds": 1, "confirm_seeds": 1, "rounds": 2},
    "standard": {"steps": 150, "seeds": 2, "confirm_seeds": 2, "rounds": 3},
    "thorough": {"steps": 300, "seeds": 3, "confirm_seeds": 3, "rounds": 5},
}


class CompressionResult(ProtocolResult):
    """A `ProtocolResult` whose artefact is a `CompressionPlan`, with the distilled student and its report."""

    student: nn.Module | None = None
    report: dict[str, Any] | None = None

    def save(self, folder: str | Path) -> Path:
        folder = super().save(folder)
        if self.student is not None:
            from policysearch.train.checkpoint import save_checkpoint

            plan = self.artefact
            save_checkpoint(folder / "model.pt", self.student, plan.model, tuple(plan.input_shape),
                            plan.num_classes, {"plan": plan.to_dict(), "comparison": self.report})
        return folder


def compress_model(teacher: nn.Module, data: DeviceData, *, flops: float = 0.5, params: float = 1.0,
                   latency: float = 1.0, latency_batch: int | None = None, min_keep: float = 0.2,
                   criterion: str = "l2", model_name: str | None = None, effort: str = "standard",
                   controller: str | None = None, seeds: int | None = None, rerank_seeds: int | None = None,
                   compass: dict[str, Any] | None = None, finetune_epochs: float = 3.0, finetune_lr: float = 0.01,
                   batch_size: int = 128, compare: bool = True, distil: bool = True, out: str | Path | None = None,
                   workers: int = 1, seed: int = 0, held_out: float = HELD_OUT,
                   say: Callable[[str], None] | None = None) -> CompressionResult:
    """Find a compression plan for `teacher` that beats uniform pruning at the targets, or keep uniform.

    Args:
        teacher: the trained network (checked against `data` first: float32, finite, its images in,
            what the data's task predicts out: one score per class, a score map per class, or an image).
        data: the data, normalised as the teacher expects.
        flops, params, latency: targets as fractions of the teacher's, in (0, 1].
        latency_batch: the second batch size the latency target holds at.
        min_keep: smallest keep ratio of a channel group.
        criterion: "l2" or "l1": which channels go.
        model_name: what the plan calls the model (a registered name rebuilds it by name).
        effort: "quick", "standard" or "thorough" (`policysearch.protocol.effort`, `COMPASS_EFFORT`).
        controller: a plan searcher of the registry ("local", the default, or "uniform").
        seeds, rerank_seeds: override the effort's paired seeds of the comparison / of the choice.
        compass: override the compass search's settings (steps, seeds, confirm_seeds, rounds, factor, ...).
        finetune_epochs, finetune_lr, batch_size: the final distillation (and the comparison's length).
        compare: run the final paired comparison on the test split.
        distil: distil the chosen plan's student (the exported model).
        out: the folder (``plan.json``, ``model.pt``, ``protocol.json``); None keeps it in memory.
        workers: distillations at once (worker processes).
        seed: the final distillation's seed; the search, choice and comparison use seeds derived from it.
        held_out: the fraction of the validation images the search never scores; the searched plan is chosen
            over uniform only when its lead on them is above zero at 95 % (a bootstrap over those images,
            `policysearch.protocol.selection`). 0: the better validation mean is chosen.
    """
    say = say or (lambda line: print(line, file=sys.stderr))
    plan = plan_for("compress", effort, controller=controller, seeds=seeds, rerank_seeds=rerank_seeds)
    info = controller_info(plan.controller)
    if info.drives != "plan":
        raise ConfigError(f"compress_model searches with a plan searcher ({', '.join(_plan_searchers())}); "
                          f"{plan.controller!r} drives Compress-v0: use policysearch.search.run_search for it")
    folder = check_output_dir(out, "out") if out is not None else None
    check_teacher(teacher, data)
    teacher = teacher.to(data.device).eval()
    example = torch.zeros(1, *data.input_shape, device=data.device)
    metric = score_metric(data)
    held = None
    if held_out:  # the search scores the other validation images only; these decide searched vs uniform
        data, held = hold_out(data, held_out, seed + HELD_OUT_SEED)
        say(f"validation: {len(data.y_val)} images scored by the search, {len(held.y_val)} held out to decide "
            "between the searched plan and uniform")
    uniform = CompressionPlan.uniform(teacher, example, flops_target=flops, params_target=params,
                                      latency_target=latency, latency_batch=latency_batch, min_keep=min_keep,
                                      criterion=criterion, model_name=model_name, task=data.task)
    options = {**COMPASS_EFFORT[effort], "min_keep": min_keep, "lr": finetune_lr, "workers": workers,
               "seed": seed, "progress": say, **(compass or {})}
    searcher = make_controller(plan.controller, ControllerSettings(options=options if plan.controller == "local"
                                                                   else {}))
    assert isinstance(searcher, PlanSearcher)
    found, summary = searcher.search(uniform, teacher, data)
    steps = training_steps(data, batch_size, finetune_epochs)
    arms = {"searched": found, "uniform": uniform}
    ranking: list[dict[str, Any]] = []
    decision = None
    chosen_label = "uniform"
    if found.kept() != uniform.kept():
        fresh = [seed + RERANK_SEED + i for i in range(plan.rerank_seeds)]
        if held is None:
            scores = distilled_scores([found, uniform], teacher, data, steps, finetune_lr, fresh, split="val",
                                      workers=workers)
            means = [float(np.mean(s)) for s in scores]
            chosen_label = "searched" if means[0] > means[1] else "uniform"  # a tie keeps uniform
        else:
            rows = distilled_image_stats([found, uniform], teacher, held, steps, finetune_lr, fresh, split="val",
                                         workers=workers)
            scores, means, decision = _held_out_choice(rows, held, metric, seed)
            chosen_label = decision["exported"]
        ranking = [{"arm": label, "searched": label == "searched", "val_scores": s, "val_mean": m, "seeds": fresh,
                    "chosen": label == chosen_label} for label, s, m in zip(arms, scores, means)]
        where = "validation" if held is None else f"the {len(held.y_val)} held-out validation images"
        say(f"{metric} on {where}, {plan.rerank_seeds} fresh seed(s) of {finetune_epochs:g} epochs: searched "
            f"{means[0]:.4f}, uniform {means[1]:.4f}: {chosen_label} chosen")
    else:
        say("the search ended at the uniform plan: uniform is kept")
    chosen = arms[chosen_label]
    comparison = None
    if compare and chosen_label == "searched":
        paired = [seed + TEST_SEED + i for i in range(plan.seeds)]
        test = distilled_scores([found, uniform], teacher, data, steps, finetune_lr, paired, split="test",
                                workers=workers)
        comparison = paired_comparison(dict(zip(arms, test)), "searched", paired, metric, {"searched"})
    verdict = _verdict(chosen_label, comparison, ranking, flops, metric, decision)
    student, report = (finish(chosen, teacher, data, finetune_epochs, finetune_lr, seed=seed, batch_size=batch_size)
                       if distil else (None, None))
    chosen = CompressionPlan.from_dict({**chosen.to_dict(), "provenance": {
        **chosen.provenance, "protocol": {"job": "compress", "chosen": chosen_label, "verdict": verdict["line"],
                                          "validation": {r["arm"]: r["val_mean"] for r in ranking}}}})
    result = CompressionResult("compress", chosen, chosen_label, verdict, ranking, comparison,
                               {"search": summary.get("local_search", {}), "final_distillation": report and
                                report.get("finetune")}, plan, search=summary, decision=decision,
                               artefact_name="plan.json")
    result.student, result.report = student, report
    if folder is not None:
        result.save(folder)
    return result


def _held_out_choice(rows: list[list[np.ndarray | None]], held: DeviceData, metric: str,
                     seed: int) -> tuple[list[list[float]], list[float], dict[str, Any]]:
    """Searched vs uniform on the held-out images: per-seed scores, means, and the decision (the searched plan
    only when the bootstrap over the images puts its lead above zero at 95 %)."""
    scores = [[float("nan") if r is None else score_rows(held.task, r) for r in plan_rows] for plan_rows in rows]
    decision = decide(held.task, "searched", "uniform", rows[0], rows[1], len(held.y_val), seed)
    if decision["difference"] is None:
        decision["reason"] = "a distillation diverged"
    return scores, [float(np.mean(s)) for s in scores], decision


def _verdict(chosen: str, comparison: dict[str, Any] | None, ranking: list[dict[str, Any]],
             flops: float, metric: str, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    if chosen == "uniform":
        if decision is not None and decision["difference"] is not None:
            d = decision["difference"]
            why = (f"its lead on the {decision['images']} held-out validation images was {d['mean']:+.2f} "
                   f"[{d['low']:+.2f}, {d['high']:+.2f}] {decision['unit']} of {metric}, not above zero at 95 %")
        elif decision is not None:
            why = decision.get("reason", "")
        else:
            why = ("the search ended at it" if not ranking else
                   f"the searched plan scored {ranking[0]['val_mean']:.4f} validation {metric} against uniform's "
                   f"{ranking[1]['val_mean']:.4f}")
        return {"exported": "uniform", "searched_won": False,
                "line": f"keep uniform pruning at {flops:g} of the FLOPs: the search did not beat it ({why})"}
    d = None if comparison is None else comparison["differences"]["uniform"]
    if d is None:
        return {"exported": "searched", "searched_won": True,
                "line": "the searched plan was chosen on validation over uniform (no test comparison)"}
    n = len(comparison["seeds"]) if comparison else 0
    ci = interval_text(d, n, metric)
    if d["low"] > 0:
        line = f"the searched plan beats uniform pruning at {flops:g} of the FLOPs by {ci}"
    elif d["high"] < 0:
        line = f"the searched plan was chosen on validation but loses to uniform on test: {ci}"
    else:
        line = f"the searched plan was chosen on validation; against uniform on test it is not resolved: {ci}"
    return {"exported": "searched", "searched_won": True, "beats_every_baseline": d["low"] > 0,
            "strongest_baseline": "uniform", "difference_points": d, "line": line}


def _plan_searchers() -> list[str]:
    return list(controller_names("plan"))
