"""Quality metrics of a classifier, the cost of training it, and the reward terms a search builds
from both (`reward_value`, `cost_units`): every env, the search driver and the closed-loop LR
controller read them here, so the engine and the artefacts never import from the envs.

Everything here is vectorised in torch and returns plain Python numbers, so results can go
straight into observations, rewards, ``info`` dicts and JSON run logs.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policysearch.checks import check_choice, check_int, check_number, check_shape
from policysearch.errors import ConfigError

__all__ = [
    "ATTACK_REWARD_METRICS",
    "COST_METRICS",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "REWARD_METRICS",
    "Cost",
    "classification_metrics",
    "cost_units",
    "count_parameters",
    "difference_unit",
    "flops_per_image",
    "format_mean_std",
    "latency_ms",
    "measure_latency",
    "peak_memory_mb",
    "reward_value",
    "summarize",
]

METRIC_NAMES: tuple[str, ...] = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "ece", "nll")

#: Direction of each metric, so a reward or a "best so far" can be computed without special cases.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "macro_precision": True,
    "macro_recall": True,
    "macro_f1": True,
    "ece": False,
    "nll": False,
    # dense tasks (policysearch.tasks)
    "miou": True,
    "pixel_accuracy": True,
    "psnr": True,
    "ssim": True,
    "mse": False,
}

#: The scalars a search may maximise: a metric, negated when lower is better, or an accuracy under attack.
REWARD_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "neg_ece", "neg_nll", "fgsm_accuracy",
                                   "miou", "pixel_accuracy", "psnr", "ssim", "neg_mse")
#: Reward metrics measured under an adversarial attack (`policysearch.train.robustness`), by attack name:
#: `policysearch.train.evaluate.evaluate(..., reward_metric=...)` adds them to the metrics when asked.
ATTACK_REWARD_METRICS: dict[str, str] = {"fgsm_accuracy": "fgsm"}
#: The units of a search's cost term, which `cost_weight` multiplies.
COST_METRICS: tuple[str, ...] = ("seconds", "tflops")


def difference_unit(metric: str) -> tuple[float, str]:
    """How a difference of `metric` is reported: (factor, unit). Fractions in [0, 1] (accuracy, mIoU,
    SSIM, ...) in points (x 100), PSNR in dB as it is, MSE as it is."""
    return {"psnr": (1.0, "dB"), "mse": (1.0, "MSE")}.get(metric, (100.0, "points"))


def reward_value(metrics: dict[str, float], reward_metric: str) -> float:
    """The scalar a search maximises: accuracy, macro F1, -ECE, -NLL or FGSM accuracy.

    An attack metric (`ATTACK_REWARD_METRICS`) must be in `metrics`: evaluate with
    ``reward_metric=...`` (`policysearch.train.evaluate.evaluate`, `Trainer.evaluate`) so the attack runs.
    """
    check_choice("reward metric", reward_metric, REWARD_METRICS)
    if reward_metric.startswith("neg_"):
        return -float(metrics[reward_metric[4:]])
    if reward_metric not in metrics:
        how = (f"evaluate with reward_metric={reward_metric!r} so the attack runs" if reward_metric in
               ATTACK_REWARD_METRICS else "it is measured on another task's data (policysearch.tasks)")
        raise ConfigError(f"the metrics hold no {reward_metric!r} (keys: {', '.join(metrics)}); {how}")
    return float(metrics[reward_metric])


def cost_units(cost_metric: str, seconds: float, train_flops: float) -> float:
    """A segment's cost in the units `cost_weight` multiplies: seconds or TFLOPs."""
    check_choice("cost metric", cost_metric, COST_METRICS)
    return seconds if cost_metric == "seconds" else train_flops / 1e12


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, num_classes: int, ece_bins: int = 15
) -> dict[str, float]:
    """Accuracy, macro precision / recall / F1, expected calibration error and NLL.

    Macro averages follow scikit-learn's default (``labels=None``, ``zero_division=0``): a class
    that occurs neither among the targets nor among the predictions is left out of the average; a
    class that occurs in only one of them counts with 0 for the undefined ratio.

    Args:
        logits: Unnormalised class scores, shape ``(N, num_classes)``.
        targets: Integer class labels, shape ``(N,)``, values in ``[0, num_classes)``.
        num_classes: Number of classes.
        ece_bins: Number of equal-width confidence bins on ``[0, 1]`` for the ECE.

    Returns:
        A dict with exactly the keys of :data:`METRIC_NAMES`, values as Python floats.

    Raises:
        ConfigError: If shapes, label values or ``num_classes`` / ``ece_bins`` are invalid.
    """
    check_int("num_classes", num_classes, 1)
    check_int("ece_bins", ece_bins, 1)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ConfigError(
            f"logits have shape {tuple(logits.shape)}, expected (N, {num_classes}) for num_classes={num_classes}"
        )
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ConfigError(
            f"targets have shape {tuple(targets.shape)}, expected ({logits.shape[0]},) to match the logits"
        )
    n = int(targets.shape[0])
    if n == 0:
        raise ConfigError("classification_metrics got 0 samples; evaluate on a non-empty split")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ConfigError(f"targets have dtype {targets.dtype}, expected integer class labels")

    logits = logits.detach()
    # Half-precision logits would make the softmax and the NLL noticeably inexact.
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    targets = targets.detach().to(device=logits.device, dtype=torch.long)
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= num_classes:
        raise ConfigError(f"targets range over [{low}, {high}], expected labels in [0, {num_classes - 1}]")

    probs = logits.softmax(dim=1)
    confidence, preds = probs.max(dim=1)
    correct = (preds == targets).to(logits.dtype)

    # Confusion matrix in one bincount: row = true class, column = predicted class.
    cm = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    cm = cm.view(num_classes, num_classes).to(torch.float64)
    tp = cm.diagonal()
    predicted = cm.sum(dim=0)
    actual = cm.sum(dim=1)
    present = (predicted + actual) > 0
    zeros = torch.zeros_like(tp)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), zeros)
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), zeros)
    # 2TP / (2TP + FP + FN) equals the harmonic mean of P and R and is 0 (not NaN) when both are 0.
    f1 = torch.where(present, 2 * tp / (predicted + actual).clamp(min=1), zeros)

    # Bin i holds confidences in (i/B, (i+1)/B]; a confidence of exactly 0 cannot occur after softmax.
    bins = (confidence * ece_bins).ceil().long().sub(1).clamp(0, ece_bins - 1)
    conf_sum = torch.bincount(bins, weights=confidence.to(torch.float64), minlength=ece_bins)
    correct_sum = torch.bincount(bins, weights=correct.to(torch.float64), minlength=ece_bins)
    # sum_b |acc_b - conf_b| * n_b / N == sum_b |correct_sum_b - conf_sum_b| / N
    ece = (correct_sum - conf_sum).abs().sum() / n

    nll = F.cross_entropy(logits, targets)

    return {
        # From the integer counts, so the figure is exact rather than a float32 running mean.
        "accuracy": float(tp.sum() / n),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "ece": float(ece),
        "nll": float(nll),
    }


def _sum_outputs(output: Any) -> torch.Tensor:
    """A scalar to backpropagate from whatever the model returned (tensor or nested tuple / list / dict)."""
    if isinstance(output, torch.Tensor):
        return output.float().sum()
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        parts = [_sum_outputs(o) for o in output if isinstance(o, (torch.Tensor, tuple, list, dict))]
        if parts:
            return torch.stack(parts).sum()
    raise ConfigError(f"the model returned {type(output).__name__}, expected a tensor (or a tuple / dict of tensors)")


def flops_per_image(
    model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu"
) -> dict[str, int]:
    """Floating point operations per image, measured with ``torch.utils.flop_counter``.

    ``"forward"`` is one inference pass (eval mode, no grad). ``"train"`` is one forward plus
    backward pass in train mode, counting the weight gradients (the input does not require grad).
    A multiply-add counts as 2 FLOPs, so ``nn.Linear(10, 5)`` costs 100 forward FLOPs.

    The model is measured on a batch of 2 (batch norm needs more than one sample in train mode),
    and the count is divided by 2. The train pass runs on a deep copy, so measuring has no side
    effects: not even for a moment, which matters when the model's tensors are shared with other
    processes (a model passed to a spawned worker lives in shared memory: a train-mode forward
    there updates the batch norm statistics every process sees).

    Args:
        model: The model, already on ``device``.
        input_shape: Shape of one image without the batch dimension, e.g. ``(3, 32, 32)``.
        device: Where to create the dummy batch.

    Returns:
        ``{"forward": int, "train": int}``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    check_shape("input_shape", input_shape, ndim=None)
    batch = 2
    # Zeros, not random numbers: FLOPs do not depend on the values, and drawing from the global RNG
    # here would shift the controller's own random stream (SB3 samples actions from it).
    x = torch.zeros(batch, *input_shape, device=device)

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)  # eval mode, no grad: reads the model, changes nothing
        forward = counter.get_total_flops()
    finally:
        model.train(was_training)
    clone = copy.deepcopy(model).train()
    for p in clone.parameters():
        p.grad = None
    with FlopCounterMode(display=False) as counter:
        loss = _sum_outputs(clone(x))
        if loss.requires_grad:  # a fully frozen model has no backward pass to count
            loss.backward()
    train = counter.get_total_flops()
    return {"forward": int(forward) // batch, "train": int(train) // batch}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    Args:
        model: The model.
        trainable_only: Count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def peak_memory_mb(device: str | torch.device) -> float:
    """Peak memory in MiB: allocated CUDA memory on a CUDA device, else this process's peak RSS.

    On CPU the figure is the resident set size of the whole process (data, Python, everything),
    which is the only comparable number available without a tracing allocator.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return 0.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux but in bytes on macOS.
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


@dataclass
class Cost:
    """What a training run cost; accumulated over segments with :meth:`add`.

    Attributes:
        seconds: Wall-clock training time.
        images: Training images processed (counting repeats over epochs).
        train_flops: Total training FLOPs (forward + backward).
        flops_per_image: Forward (inference) FLOPs of one image.
        params: Number of model parameters.
        peak_memory_mb: Peak memory, see :func:`peak_memory_mb`.
    """

    seconds: float = 0.0
    images: int = 0
    train_flops: float = 0.0
    flops_per_image: float = 0.0
    params: int = 0
    peak_memory_mb: float = 0.0

    def add(self, seconds: float, images: int, train_flops_per_image: float) -> None:
        """Account for one more stretch of training.

        Args:
            seconds: Its wall-clock time.
            images: Images it processed.
            train_flops_per_image: Forward + backward FLOPs per image (``flops_per_image(...)["train"]``).
        """
        check_number("Cost.add seconds", seconds, 0.0)
        check_int("Cost.add images", images, 0)
        check_number("Cost.add train_flops_per_image", train_flops_per_image, 0.0)
        self.seconds += float(seconds)
        self.images += int(images)
        self.train_flops += float(images) * float(train_flops_per_image)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return asdict(self)


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value).

    Raises:
        ConfigError: If ``values`` is empty.
    """
    values = [float(v) for v in values]
    if not values:
        raise ConfigError("summarize got no values; expected at least one")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def format_mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``"0.9123 ± 0.0021"`` for the mean and sample std of ``values``."""
    mean, std = summarize(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# ---------------------------------------------------------------------- latency
_WARM_SECONDS = 0.05  # warm-up time before a latency is timed


@torch.inference_mode()
def latency_ms(model: nn.Module, input_shape: tuple[int, int, int], batch: int, repeats: int = 30) -> float:
    """Median CPU wall time of one forward pass at `batch` images, in milliseconds, measured warm.

    The first passes of a shape in a process pay for the allocator, kernel selection and the thread
    pool (a first pass seen at 92 ms against 7 ms after): the warm-up runs at least 5 passes and at
    least 0.05 s (at most 200 passes) before anything is timed."""
    model = model.to("cpu").eval()
    x = torch.rand(batch, *input_shape)
    started, passes = time.perf_counter(), 0
    while passes < 5 or (time.perf_counter() - started < _WARM_SECONDS and passes < 200):
        model(x)
        passes += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_latency(model: nn.Module, input_shape: Sequence[int], batches: Sequence[int] = (1,),
                    repeats: int = 20) -> dict[str, float]:
    """Median CPU wall milliseconds of one forward pass, per batch size: ``{"1": ms, "64": ms}``.

    The model is measured on the CPU (a copy, when it lives elsewhere), in eval mode, after warm-up passes.
    """
    check_int("repeats", repeats, 1)
    param = next(model.parameters(), None)
    on_cpu = param is None or param.device.type == "cpu"
    was_training = model.training
    subject = model if on_cpu else _cpu_copy(model)
    out = {str(b): latency_ms(subject, tuple(input_shape), int(b), repeats=repeats) for b in batches}  # type: ignore[arg-type]
    model.train(was_training)
    return out


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu")
