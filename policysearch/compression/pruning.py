"""Cheap scores for pruned candidates, and what a compression search does around them.

- `adaptive_bn`: EagleEye's adaptive batch norm (Li et al. 2020): a pruned network's BatchNorm
  running statistics describe the unpruned network's activations; recomputing them on K training
  batches (train-mode forward passes, no gradient, nothing else changes) makes the pruned network's
  validation accuracy a usable proxy for its accuracy after fine-tuning.
- `val_score`: the score of a student: the data's task metric (`score_metric`: accuracy, mIoU or PSNR, the
  task's ``default_metric``) on (the first images of) a split; `val_accuracy` / `correct_images` are the
  classification figures image by image.
- `proxy_score`: prune-time score of a student: adaptive BN, then `val_score` on (a slice of) the
  validation split.
- `rerank`: distil a few candidates briefly and order them by their validation score (the last step of
  a search, before one plan is chosen).
- `top_plans`: the best distinct plans of a search's episodes.
- `distilled_scores`: the comparison of plans: each distilled with each paired seed and scored on a split,
  in worker processes when asked (one torch thread each); `distilled_correct` / `distilled_accuracies` the
  same for classifiers, image by image (what a bootstrap over the images resamples) or as accuracies.
- `proxy_correlation`: Spearman and Kendall rank correlation between each proxy's scores and the
  score after a longer fine-tune, over many plans (how the default proxy was chosen).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from policysearch.checks import check_int
from policysearch.compression.distill import distill
from policysearch.data import DeviceData
from policysearch.data.preprocess import normalise
from policysearch.device import autocast, to_device
from policysearch.errors import ConfigError
from policysearch.policies.compress import CompressionPlan
from policysearch.processes import in_processes
from policysearch.tasks import get_task
from policysearch.train.evaluate import image_stats

__all__ = [
    "accuracy_of",
    "adaptive_bn",
    "correct_images",
    "distilled_accuracies",
    "distilled_correct",
    "distilled_image_stats",
    "distilled_scores",
    "proxy_accuracy",
    "proxy_correlation",
    "proxy_score",
    "rerank",
    "score_metric",
    "top_plans",
    "val_accuracy",
    "val_score",
]

PROXIES = ("adaptive-bn", "distill")


def _norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def adaptive_bn(model: nn.Module, data: DeviceData, batches: int = 50, batch_size: int = 128, seed: int = 0) -> int:
    """Recompute every BatchNorm layer's running mean and variance on `batches` training batches, in place.

    The model runs in eval mode except its BatchNorm layers (so dropout stays off), under
    ``torch.no_grad``; each BatchNorm layer's statistics are reset and re-estimated as a plain
    average over the batches (momentum None for the pass, restored after). Weights, biases and every
    other buffer are left exactly as they were. A model without BatchNorm is left unchanged.

    Args:
        model: the (pruned) network; moved to ``data.device``, left in its previous train / eval mode.
        data: device-resident splits; batches come from the training split.
        batches: forward passes (at most the training split, in whole batches).
        batch_size: images per pass.
        seed: which images (a seeded permutation; the global RNG is not touched).

    Returns:
        The number of images the statistics were computed on.
    """
    check_int("batches", batches, 0)
    check_int("batch_size", batch_size, 1)
    norms = _norm_layers(model)
    if not norms or batches == 0:
        return 0
    model = to_device(model, data.device)
    x_all, _ = data.split_arrays("train")
    generator = torch.Generator(device=x_all.device).manual_seed(seed)
    order = torch.randperm(len(x_all), device=x_all.device, generator=generator)[: batches * batch_size]
    was_training = model.training
    momenta = [m.momentum for m in norms]
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        # no_grad, not inference_mode: the buffers must stay ordinary tensors, trainable later.
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                x = x_all[order[start: start + batch_size]].float().div_(255.0)
                with autocast(data.device):
                    model(normalise(x, data))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(order)


def _feed(model: nn.Module, data: DeviceData, images: int | None, split: str,
          take: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
    """``take(outputs, stored targets)`` for the first `images` of a split (None: all), batch by batch, in the
    split's order, as `policysearch.train.evaluate` feeds them (eval mode meanwhile, the mode restored after)."""
    model = to_device(model, data.device)
    x_all, y_all = data.split_arrays(split)
    if images is not None:
        x_all, y_all = x_all[:images], y_all[:images]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(y_all), 1024):
                x = x_all[start: start + 1024].float().div_(255.0)
                with autocast(data.device):
                    out = model(normalise(x, data))
                take(out, y_all[start: start + 1024])
    finally:
        model.train(was_training)


def correct_images(model: nn.Module, data: DeviceData, images: int | None = None, split: str = "val") -> np.ndarray:
    """Whether each of the first `images` of a split (None: all) is classified correctly, in the split's
    order, as `policysearch.train.evaluate` feeds them: what a bootstrap over the scored images resamples."""
    correct: list[np.ndarray] = []
    _feed(model, data, images, split, lambda logits, y: correct.append((logits.argmax(1) == y).cpu().numpy()))
    return np.concatenate(correct) if correct else np.zeros(0, dtype=bool)


def val_accuracy(model: nn.Module, data: DeviceData, images: int | None = None, split: str = "val") -> float:
    """Accuracy on the first `images` of a split (None: all), as `policysearch.train.evaluate` feeds them."""
    return accuracy_of(correct_images(model, data, images, split))


def score_metric(data: DeviceData) -> str:
    """What a compression scores students by on `data`: its task's default metric ("accuracy" for
    classification, "miou" for segmentation, "psnr" for restoration; higher is better for each)."""
    return get_task(data.task).default_metric


#: The metrics scored here image by image, as compression always scored classifiers: accuracy, the share of
#: images whose largest logit is the label's (`correct_images`, counted exactly), so that a classifier's
#: scores are those of `val_accuracy` and `distilled_accuracies` bit for bit. Every other metric comes from
#: the task's accumulator over the same batches, as `policysearch.train.evaluate` computes it.
_BY_IMAGE = frozenset({"accuracy"})


def val_score(model: nn.Module, data: DeviceData, images: int | None = None, split: str = "val") -> float:
    """The data's task metric (`score_metric`) of `model` on the first `images` of a split (None: all): the
    validation accuracy of a classifier, the mIoU of a segmentation over those images' pixels, the mean PSNR
    of restored images. On a subset it is the same metric computed on that subset."""
    metric = score_metric(data)
    if metric in _BY_IMAGE:
        return val_accuracy(model, data, images, split)
    task = get_task(data.task)
    scores = task.accumulator(data)
    _feed(model, data, images, split, lambda out, y: scores.add(out.float(), task.batch_target(y)))
    return float(scores.result()[metric])


def proxy_score(student: nn.Module, data: DeviceData, batches: int = 50, batch_size: int = 128, seed: int = 0,
                images: int | None = None) -> float:
    """The adaptive-BN proxy: `adaptive_bn` on the training split, then `val_score`."""
    adaptive_bn(student, data, batches, batch_size, seed)
    return val_score(student, data, images)


proxy_accuracy = proxy_score  # its name from when every student was a classifier


def top_plans(episodes: Sequence[Mapping[str, Any]], k: int = 5, with_first: bool = True) -> list[Any]:
    """The `k` best distinct plans of a search's episode records, best score first.

    With `with_first`, the first episode's plan (the uniform plan, candidate 0 of every Compress-v0
    search) comes last when the proxy did not place it among the `k`: a re-ranking then returns uniform
    unless some candidate beats it after the short fine-tune too, not only on the proxy.
    """

    done = [e for e in episodes if e.get("steps") and "plan" in e["steps"][-1]]
    ranked = sorted(done, key=lambda e: (-float(e["score"]), e["episode"]))
    plans: list[Any] = []
    seen: set[tuple] = set()
    for e in ranked:
        plan = CompressionPlan.from_dict(e["steps"][-1]["plan"], source=f"episode {e['episode']}")
        key = tuple(sorted(plan.kept().items()))
        if key in seen:
            continue
        seen.add(key)
        plans.append(plan)
        if len(plans) == k:
            break
    if with_first and done:
        first = min(done, key=lambda e: e["episode"])
        plan = CompressionPlan.from_dict(first["steps"][-1]["plan"], source=f"episode {first['episode']}")
        if tuple(sorted(plan.kept().items())) not in seen:
            plans.append(plan)
    return plans


def rerank(plans: Sequence[Any], teacher: nn.Module, data: DeviceData, steps: int, lr: float = 0.01,
           seed: int = 0, batch_size: int = 128, images: int | None = None,
           temperature: float = 4.0, alpha: float = 0.9) -> list[dict[str, Any]]:
    """Distil each plan's student for `steps` (same seed for all) and score it on the validation split
    (`val_score`: the data's task metric, `score_metric`).

    Returns:
        ``{"index", "plan", "val_<metric>", "seconds"}`` per plan (``val_accuracy`` for a classifier,
        ``val_miou``, ``val_psnr``), best first (ties: the earlier plan); a diverged distillation scores -1,
        below every real score (fractions, and PSNR of images clipped to [0, 1], are at least 0).
    """

    check_int("steps", steps, 0)
    key = f"val_{score_metric(data)}"
    teacher = teacher.to(data.device).eval()
    example = torch.zeros(1, *data.input_shape, device=data.device)
    rows = []
    for i, plan in enumerate(plans):
        start = time.perf_counter()
        student = plan.apply(teacher, example)
        stats = distill(student, teacher, data, steps, lr, temperature=temperature, alpha=alpha,
                        batch_size=batch_size, seed=seed)
        score = -1.0 if stats.diverged else val_score(student, data, images)
        rows.append({"index": i, "plan": plan, key: score, "seconds": time.perf_counter() - start})
    return sorted(rows, key=lambda r: (-r[key], r["index"]))


def _distilled(plan: Any, teacher: nn.Module, data: DeviceData, steps: int, lr: float, seed: int,
               split: str, scoring: str) -> np.ndarray | float | None:
    """One distillation, scored by `scoring`: "score" (the task metric), "correct" (`correct_images`) or
    "rows" (each image's rows of the task metric, `policysearch.train.evaluate.image_stats`)."""
    import copy


    # In a spawned worker the teacher's tensors are shared memory, seen by every worker and the parent:
    # work on a private copy so that nothing done here can reach them.
    teacher = copy.deepcopy(teacher)
    student = plan.apply(teacher, torch.zeros(1, *data.input_shape, device=data.device))
    stats = distill(student, teacher, data, steps, lr, seed=seed)
    if scoring == "correct":
        return None if stats.diverged else correct_images(student, data, split=split)
    if scoring == "rows":
        return None if stats.diverged else image_stats(student, data, split).numpy()
    return float("nan") if stats.diverged else val_score(student, data, split=split)


def _distil_plans(plans: Sequence[Any], teacher: nn.Module, data: DeviceData, steps: int, lr: float,
                  seeds: Sequence[int], split: str, workers: int, scoring: str) -> list[list[Any]]:
    check_int("steps", steps, 1)
    check_int("workers", workers, 1)
    teacher = teacher.to(data.device).eval()
    keys = [tuple(sorted(plan.kept().items())) for plan in plans]
    distinct = dict(zip(keys, plans))
    jobs = [(plan, teacher, data, steps, lr, seed, split, scoring) for plan in distinct.values() for seed in seeds]

    done = in_processes(_distilled, jobs, workers)
    by_key = {key: done[i * len(seeds):(i + 1) * len(seeds)] for i, key in enumerate(distinct)}
    return [list(by_key[key]) for key in keys]


def distilled_scores(plans: Sequence[Any], teacher: nn.Module, data: DeviceData, steps: int, lr: float,
                     seeds: Sequence[int], split: str = "test", workers: int = 1) -> list[list[float]]:
    """Distil every plan's student for `steps` with each seed and score it on `split` (`val_score`: the
    data's task metric, `score_metric`).

    A seed fixes the batch order, so plans are compared on paired seeds. Plans that keep the same
    channels train once. With ``workers > 1`` the trainings run in that many spawned processes with one
    torch thread each: the same trainings as a serial run, up to float rounding between processes.

    Returns:
        One list per plan, one score per seed (NaN where the distillation diverged); for a classifier the
        accuracies of `distilled_accuracies` (the same runs, scored image by image).
    """
    if score_metric(data) in _BY_IMAGE:
        return distilled_accuracies(plans, teacher, data, steps, lr, seeds, split, workers)
    return _distil_plans(plans, teacher, data, steps, lr, seeds, split, workers, scoring="score")


def distilled_correct(plans: Sequence[Any], teacher: nn.Module, data: DeviceData, steps: int, lr: float,
                      seeds: Sequence[int], split: str = "test", workers: int = 1) -> list[list[np.ndarray | None]]:
    """`distilled_scores` for classifiers, image by image: whether each image of `split` is classified
    correctly (what a bootstrap over the images resamples).

    Returns:
        One list per plan, one boolean array per seed (`correct_images`; None where the distillation
        diverged).
    """
    return _distil_plans(plans, teacher, data, steps, lr, seeds, split, workers, scoring="correct")


def distilled_image_stats(plans: Sequence[Any], teacher: nn.Module, data: DeviceData, steps: int, lr: float,
                          seeds: Sequence[int], split: str = "val", workers: int = 1) -> list[list[np.ndarray | None]]:
    """`distilled_scores` image by image, for any task: each image's ``(d,)`` row of the task metric
    (`policysearch.train.evaluate.image_stats`; `Task.score_from_stats` of their sum is the metric), what a
    bootstrap over the images resamples.

    Returns:
        One list per plan, one ``(N, d)`` array per seed (None where the distillation diverged).
    """
    return _distil_plans(plans, teacher, data, steps, lr, seeds, split, workers, scoring="rows")


def distilled_accuracies(plans: Sequence[Any], teacher: nn.Module, data: DeviceData, steps: int, lr: float,
                         seeds: Sequence[int], split: str = "test", workers: int = 1) -> list[list[float]]:
    """`distilled_correct` as accuracies: one list per plan, one accuracy per seed (NaN where the
    distillation diverged); classifiers only (`distilled_scores` for any task)."""
    return [[accuracy_of(c) for c in row]
            for row in distilled_correct(plans, teacher, data, steps, lr, seeds, split, workers)]


def accuracy_of(correct: np.ndarray | None) -> float:
    """The accuracy of one `correct_images` array (NaN for a diverged run's None)."""
    return float("nan") if correct is None else int(correct.sum()) / max(1, len(correct))


def proxy_correlation(
    plans: Sequence[Any],
    teacher: nn.Module,
    data: DeviceData,
    proxies: Mapping[str, Callable[[nn.Module, int], float]],
    final: Callable[[nn.Module, int], float],
    seed: int = 0,
) -> dict[str, Any]:
    """Rank correlation between each proxy's scores and the final score, over `plans`.

    Args:
        plans: CompressionPlans of `teacher` (20 or more for a meaningful figure).
        teacher: the unpruned network.
        data: its splits.
        proxies: name -> ``score(student, seed)``, called on a fresh pruned copy for each plan.
        final: ``score(student, seed)`` after the full fine-tune (e.g. `val_score` on the test split), on a
            fresh pruned copy.
        seed: passed to every call (common random numbers across plans).

    Returns:
        ``{"plans": n, "final": [...], "proxies": {name: {"scores", "spearman", "spearman_p", "kendall",
        "kendall_p", "seconds_per_plan"}}, "final_seconds_per_plan"}``.
    """
    from scipy import stats

    if len(plans) < 3:
        raise ConfigError(f"proxy_correlation needs at least 3 plans, got {len(plans)}")
    teacher = teacher.to(data.device).eval()
    example = torch.zeros(1, *data.input_shape, device=data.device)
    scores: dict[str, list[float]] = {name: [] for name in proxies}
    seconds: dict[str, float] = dict.fromkeys(proxies, 0.0)
    finals: list[float] = []
    final_seconds = 0.0
    for plan in plans:
        for name, score in proxies.items():
            start = time.perf_counter()
            scores[name].append(float(score(plan.apply(teacher, example), seed)))
            seconds[name] += time.perf_counter() - start
        start = time.perf_counter()
        finals.append(float(final(plan.apply(teacher, example), seed)))
        final_seconds += time.perf_counter() - start
    out: dict[str, Any] = {"plans": len(plans), "final": finals, "final_seconds_per_plan": final_seconds / len(plans),
                           "proxies": {}}
    for name, values in scores.items():
        rho, rho_p = stats.spearmanr(values, finals)
        tau, tau_p = stats.kendalltau(values, finals)
        out["proxies"][name] = {"scores": values, "spearman": float(rho), "spearman_p": float(rho_p),
                                "kendall": float(tau), "kendall_p": float(tau_p),
                                "seconds_per_plan": seconds[name] / len(plans)}
    return out
