"""The export decision, taken on validation images the search never scored.

A search climbs on its validation images, and re-training its best candidates on those same images
with fresh seeds still favours the candidates that happen to fit them: the winner's curse. On the
pre-registered user-style regime R3 (benchmarks/RESULTS.md, "Product defaults on untuned regimes") the
protocol exported a searched policy that led no augmentation by one validation image in 200 and lost
0.68 points [-1.16, -0.23] on test; its compression plan led uniform on validation and lost 0.61 on test.

So the protocol holds part of the validation split back (`hold_out`). The search, and the re-ranking
that picks the best searched candidate and the best baseline, see only the rest. The held-out images
then decide between those two, once: the searched candidate is exported only when a paired bootstrap
over the held-out images (`image_bootstrap`) puts its lead above zero often enough; otherwise the best
baseline is, and the verdict says why. The bootstrap resamples images, not training seeds, so it is a
margin against image noise, the part of the curse that fresh seeds cannot remove.

How often is "enough" (``confidence``): None asks for the 95 % CI's low end above zero (the first bar);
a number p asks for more than p of the resamples to put the searched candidate ahead. The held-out images
were never searched on, so their difference is an unbiased estimate and a lower bar costs little: on
twelve registered runs the 95 % bar kept the baseline every time and missed five gains of 0.28-0.84
points; augment and schedule now use 0.8 (`policysearch.protocol.effort`).

The images are not the only noise: a net whose result scatters with its training seed can lead on every
decision seed by chance (the registered E3 run: ahead in 100 % of the image resamples on 3 seeds, 2.07
points behind on test). So the product counts both (``seed_error``, `seed_and_image_share`): the per-seed
differences' scatter joins the images' standard error, read on a Student t with n - 1 degrees of freedom.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from policysearch.data import DeviceData
from policysearch.data.splits import stratified_split
from policysearch.errors import ConfigError
from policysearch.metrics import difference_unit
from policysearch.tasks import get_task

__all__ = ["HELD_OUT", "HELD_OUT_SEED", "bar_text", "decide", "hold_out", "image_bootstrap", "score_rows",
           "seed_and_image_share"]

HELD_OUT = 0.5  # of the validation split, by default
# Counting the seeds, the bar None (the 95 % interval's) is a probability above this: its one-sided equivalent.
CI_CONFIDENCE = 0.975
HELD_OUT_SEED = 30_000  # the split's seed is the protocol's seed plus this: apart from every training's


def hold_out(data: DeviceData, fraction: float, seed: int) -> tuple[DeviceData, DeviceData]:
    """Split `data`'s validation images into the part the search scores and a held-out part.

    Stratified by class for classification (a seeded split otherwise); both views share the training and
    test tensors. Their ``split`` records the sizes, so ledgers and runs never mix the two.

    Returns:
        ``(searched, held)``: `data` with only the searched part as "val", and with only the held-out part.

    Raises:
        ConfigError: `fraction` outside (0, 1), or a validation split too small to leave an image on each side.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"held-out fraction is {fraction!r}, expected a number in (0, 1) (0 turns it off)")
    n = len(data.y_val)
    if n < 4:
        raise ConfigError(f"the validation split has {n} images: too few to hold any back for the export decision "
                          "(use a larger --val-size, or --held-out 0)")
    key = get_task(data.task).split_key(data.y_val.cpu())
    searched_idx, held_idx = stratified_split(key, max(1, min(n - 1, round(fraction * n))), None, seed)
    views = []
    for idx, role in ((searched_idx, "searched"), (held_idx, "held")):
        idx = idx.to(data.y_val.device)
        split = {**data.split, "val_size": len(idx), "val_part": role, "held_out": len(held_idx),
                 "held_out_seed": seed}
        views.append(dataclasses.replace(data, x_val=data.x_val[idx], y_val=data.y_val[idx], split=split))
    return views[0], views[1]


def image_bootstrap(task: str, a: Any, b: Any, resamples: int = 5_000, level: float = 0.95,
                    seed: int = 0) -> dict[str, float]:
    """The default metric of arm `a` minus arm `b` on the same images, with a percentile bootstrap CI over
    the images (each resample draws images with replacement and scores both arms on them).

    Args:
        task: the data's task, which turns per-image rows into its metric (`Task.score_from_stats`).
        a, b: ``(N, d)`` per-image rows of each arm (`policysearch.train.evaluate.image_stats`; averaged over
            an arm's seeds), in the same image order.

    Returns:
        ``{"mean", "low", "high", "images", "p_above_zero", "std"}``, in the metric's own units (a fraction, dB);
        `std` is the resampled differences' standard deviation (the image noise's standard error).
    """
    scorer = get_task(task)
    x = torch.as_tensor(np.asarray(a, dtype=np.float64))
    y = torch.as_tensor(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.dim() != 2 or len(x) < 2:
        raise ConfigError(f"per-image rows of shapes {tuple(x.shape)} and {tuple(y.shape)}: expected the same "
                          "(N, d), N >= 2")
    n = len(x)
    mean = float(scorer.score_from_stats(x.sum(0), n) - scorer.score_from_stats(y.sum(0), n))
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for start in range(0, resamples, 500):  # bounded memory: 500 resamples x N counts at a time
        rows = min(500, resamples - start)
        counts = torch.zeros(rows, n, dtype=torch.float64)
        counts.scatter_add_(1, torch.randint(0, n, (rows, n), generator=generator),
                            torch.ones(rows, n, dtype=torch.float64))
        diffs.append(scorer.score_from_stats(counts @ x, n) - scorer.score_from_stats(counts @ y, n))
    resampled = torch.cat(diffs).numpy()
    tail = (1.0 - level) / 2.0
    return {"mean": mean, "low": float(np.quantile(resampled, tail)), "high": float(np.quantile(resampled, 1 - tail)),
            "images": n, "p_above_zero": float((resampled > 0).mean()), "std": float(resampled.std(ddof=1))}


def score_rows(task: str, rows: Any) -> float:
    """The task's default metric of images given as per-image rows ``(N, d)``."""
    x = torch.as_tensor(np.asarray(rows, dtype=np.float64))
    return float(get_task(task).score_from_stats(x.sum(0), len(x)))


def bar_text(confidence: float | None, seed_error: bool = False) -> str:
    """The export bar in words: "above zero at 95 %", "ahead in more than 80 % of the resamples", or with
    `seed_error` "ahead with a probability above 0.8, counting the seeds' scatter and the images'"."""
    if seed_error:
        return (f"ahead with a probability above {CI_CONFIDENCE if confidence is None else confidence:g}, "
                "counting the seeds' scatter and the images'")
    return "above zero at 95 %" if confidence is None else f"ahead in more than {100 * confidence:g} % of the resamples"


def seed_and_image_share(differences: Sequence[float], image_std: float) -> tuple[float, float]:
    """P(the searched arm is ahead) when both the training seeds and the held-out images are samples: the per-seed
    paired differences' mean over a standard error of ``sqrt(s_seed^2 / n + image_std^2)``, read on a Student t
    with n - 1 degrees of freedom (few seeds: heavy tails). Returns (the share, the standard error)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    se = float(np.sqrt(d.var(ddof=1) / len(d) + image_std ** 2))
    if se == 0.0:
        return (1.0 if d.mean() > 0 else 0.0), se
    return float(stats.t.cdf(d.mean() / se, len(d) - 1)), se


def decide(task: str, searched: str, baseline: str, rows_searched: Sequence[Any], rows_baseline: Sequence[Any],
           images: int, seed: int = 0, confidence: float | None = None, seed_error: bool = False) -> dict[str, Any]:
    """The held-out decision between the best searched arm and the best baseline.

    Args:
        task: the data's task (its default metric is compared).
        searched, baseline: the two arms' labels.
        rows_searched, rows_baseline: per training seed, the held-out images' rows (`image_bootstrap`), None for a
            training that diverged; an arm's rows are averaged over its seeds.
        images: how many images were held out.
        confidence: the export bar (module docstring): None, the 95 % CI's low end above zero; a number p in
            [0.5, 1), more than p of the bootstrap resamples with the searched arm ahead.
        seed_error: with two seeds or more per arm, count the training seeds' scatter as well as the images'
            (`seed_and_image_share`): the share ahead the bar is held to is then that one (None: 0.975).

    Returns:
        ``{"searched", "baseline", "metric", "unit", "images", "scores", "difference", "share_ahead", "bar",
        "exported"}``: the difference (searched - baseline) and its 95 % CI in points or dB
        (`policysearch.metrics.difference_unit`), None with a diverged training (then ``"reason"`` says so and the
        baseline is exported); the share of resamples with the searched arm ahead (with `seed_error`, the share
        counting seeds too; then also ``"share_ahead_images"``, ``"seed_differences"`` and ``"standard_error"``);
        `exported` is the searched arm's label only when the bar is met.
    """
    metric = get_task(task).default_metric
    factor, unit = difference_unit(metric)
    decision: dict[str, Any] = {"searched": searched, "baseline": baseline, "metric": metric, "unit": unit,
                                "images": images, "scores": None, "difference": None, "share_ahead": None,
                                "bar": bar_text(confidence), "exported": baseline}
    if any(r is None for r in (*rows_searched, *rows_baseline)):
        decision["reason"] = "a training diverged"
        return decision
    mean_a = np.mean([np.asarray(r) for r in rows_searched], axis=0)
    mean_b = np.mean([np.asarray(r) for r in rows_baseline], axis=0)
    boot = image_bootstrap(task, mean_a, mean_b, seed=seed)
    decision["scores"] = {searched: score_rows(task, mean_a), baseline: score_rows(task, mean_b)}
    decision["difference"] = {k: factor * boot[k] for k in ("mean", "low", "high")} | {"images": boot["images"]}
    decision["share_ahead"] = boot["p_above_zero"]
    met = boot["low"] > 0 if confidence is None else boot["p_above_zero"] > confidence
    if seed_error and len(rows_searched) >= 2 and len(rows_searched) == len(rows_baseline):
        diffs = [factor * (score_rows(task, a) - score_rows(task, b)) for a, b in zip(rows_searched, rows_baseline)]
        share, se = seed_and_image_share(diffs, factor * boot["std"])
        decision.update(share_ahead=share, share_ahead_images=boot["p_above_zero"], standard_error=se,
                        seed_differences=[round(float(x), 6) for x in diffs],
                        bar=bar_text(confidence, seed_error=True))
        met = share > (CI_CONFIDENCE if confidence is None else confidence)
    decision["exported"] = searched if met else baseline
    return decision
