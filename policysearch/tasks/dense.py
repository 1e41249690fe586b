"""Dense prediction: segmentation (a class per pixel) and restoration (an image per image).

Restoration targets and outputs are compared in pixel units: the model sees the normalised degraded
image and returns the clean one in the same normalised units (a model with a global skip connection
then learns the residual); the loss is the mean squared error there, the metrics are taken after
undoing the normalisation and clipping to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from policysearch.tasks.base import IGNORE_INDEX, Accumulator, Task

__all__ = ["Restoration", "Segmentation", "psnr", "segmentation_scores", "ssim"]

SSIM_WINDOW = 7  # Wang et al. use 11 on large images; 7 (the scikit-image default) suits 28-64 px images


# ---------------------------------------------------------------------- metric functions
def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts of (true class, predicted class) over the pixels whose target is not ignored."""
    keep = target != IGNORE_INDEX
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(counts: torch.Tensor, classes: list[str] | None = None) -> dict[str, float]:
    """Mean IoU (over the classes present in target or prediction), pixel accuracy, and the IoU of each
    class (``iou/<name>``, NaN for a class that appears nowhere) from a confusion matrix."""
    counts = counts.double()
    tp = counts.diag()
    union = counts.sum(0) + counts.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    present = union > 0
    total = float(counts.sum())
    scores = {"miou": float(iou[present].mean()) if bool(present.any()) else math.nan,
              "pixel_accuracy": float(tp.sum()) / total if total else math.nan}
    names = classes or [str(k) for k in range(len(tp))]
    scores.update({f"iou/{name}": float(v) for name, v in zip(names, iou)})
    return scores


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image (dB, peak 1): ``10 log10(1 / MSE)``, MSE floored at 1e-10."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=1e-10))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity of each image (kornia's Gaussian-window SSIM, peak 1, averaged over pixels
    and channels)."""
    import kornia

    window = min(SSIM_WINDOW, *pred.shape[-2:]) | 1  # odd, no larger than the image
    return kornia.metrics.ssim(pred.float(), target.float(), window, max_val=1.0).flatten(1).mean(1)


# ---------------------------------------------------------------------- segmentation
class _Confusion(Accumulator):
    def __init__(self, num_classes: int, classes: list[str]) -> None:
        self.num_classes, self.classes = num_classes, classes
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.nll, self.pixels = 0.0, 0
        self.per_image: list[torch.Tensor] = []

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        target = target.long()
        pred = output.argmax(1)
        self.counts += confusion(pred, target, self.num_classes).cpu()
        self.per_image.append(_intersection_union(pred, target, self.num_classes).cpu())
        loss = F.cross_entropy(output.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
        self.nll += float(loss)
        self.pixels += int((target != IGNORE_INDEX).sum())

    def result(self) -> dict[str, float]:
        scores = segmentation_scores(self.counts, self.classes)
        return {**scores, "nll": self.nll / self.pixels if self.pixels else math.nan}

    def image_stats(self) -> torch.Tensor:
        return torch.cat(self.per_image).double()


def _intersection_union(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, 2K)``: each image's pixel intersection and union per class (labelled pixels only); summed over
    images they are the confusion matrix's diagonal and ``row + column - diagonal``, so mIoU follows."""
    b, k = len(pred), num_classes
    keep = (target != IGNORE_INDEX).flatten(1)
    image = torch.arange(b, device=pred.device).unsqueeze(1).expand_as(keep)
    p, t = pred.flatten(1), target.flatten(1)

    def per_class(where: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return torch.bincount((image * k + cls)[where], minlength=b * k).reshape(b, k)

    inter = per_class(keep & (p == t), p)
    union = per_class(keep, p) + per_class(keep, t.clamp(max=k - 1)) - inter
    return torch.cat([inter, union], 1)


class Segmentation(Task):
    """An integer mask per image: class indices, `IGNORE_INDEX` where no label applies."""

    name = "segmentation"
    target_kind = "mask"
    metric_names = ("miou", "pixel_accuracy", "nll")
    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, "pixel_accuracy": True, "nll": False}
    default_metric = "miou"
    reward_metrics = ("miou", "pixel_accuracy", "neg_nll")

    def check_targets(self, x: torch.Tensor, y: Any, num_classes: int, what: str) -> str | None:
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.uint8, torch.int64) or y.dim() != 3:
            return f"{what} must be integer masks of shape (N, H, W)"
        if tuple(y.shape) != (x.shape[0], *x.shape[2:]):
            return f"{what} has shape {tuple(y.shape)}, expected {(x.shape[0], *x.shape[2:])} (one mask per image)"
        if y.numel():
            values = torch.unique(y)
            bad = values[(values < 0) | ((values >= num_classes) & (values != IGNORE_INDEX))]
            if len(bad):
                return (f"{what} holds the values {bad[:5].tolist()}, expected class indices 0..{num_classes - 1} "
                        f"or {IGNORE_INDEX} (ignored)")
        return None

    def output_shape(self, input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, ...]:
        return (num_classes, *input_shape[1:])

    def batch_target(self, y: torch.Tensor) -> torch.Tensor:
        return y.long()

    def loss(self, output: torch.Tensor, target: torch.Tensor, data: Any, label_smoothing: float = 0.0) -> torch.Tensor:
        # Summed, then divided by the labelled pixels (at least one): a batch whose every pixel is ignored
        # has a zero loss instead of cross_entropy's NaN, with no device sync to find out.
        total = F.cross_entropy(output.float(), target, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing,
                                reduction="sum")
        return total / (target != IGNORE_INDEX).sum().clamp(min=1)

    def accumulator(self, data: Any) -> Accumulator:
        return _Confusion(data.num_classes, list(data.classes))

    def score_from_stats(self, totals: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
        """mIoU over the classes present (a union above zero), as `segmentation_scores` takes it."""
        k = totals.shape[-1] // 2
        inter, union = totals[..., :k], totals[..., k:]
        present = union > 0
        iou = torch.where(present, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
        return iou.sum(-1) / present.sum(-1).clamp(min=1)


# ---------------------------------------------------------------------- restoration
class _ImageScores(Accumulator):
    def __init__(self, data: Any) -> None:
        self.mean, self.std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
        self.psnr, self.ssim, self.mse = [], [], []

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        pred = (output.float() * self.std + self.mean).clamp(0.0, 1.0)
        target = target.float()
        self.psnr.append(psnr(pred, target))
        self.ssim.append(ssim(pred, target))
        self.mse.append((pred - target).pow(2).flatten(1).mean(1))

    def result(self) -> dict[str, float]:
        return {"psnr": float(torch.cat(self.psnr).mean()), "ssim": float(torch.cat(self.ssim).mean()),
                "mse": float(torch.cat(self.mse).mean())}

    def image_stats(self) -> torch.Tensor:  # each image's PSNR: the metric is their mean
        return torch.cat(self.psnr).double().cpu().unsqueeze(1)


class Restoration(Task):
    """An image target: the clean image, the same size as the (degraded) input."""

    name = "restoration"
    target_kind = "image"
    metric_names = ("psnr", "ssim", "mse")
    higher_is_better: ClassVar[dict[str, bool]] = {"psnr": True, "ssim": True, "mse": False}
    default_metric = "psnr"
    reward_metrics = ("psnr", "ssim", "neg_mse")
    loss_metric = "mse"
    default_model = "unet-residual"  # starts as the identity: the degraded image, refined

    def check_targets(self, x: torch.Tensor, y: Any, num_classes: int, what: str) -> str | None:
        if not isinstance(y, torch.Tensor) or y.dtype != torch.uint8 or y.dim() != 4:
            return f"{what} must be uint8 images of shape (N, C, H, W)"
        if tuple(y.shape) != tuple(x.shape):
            return (f"{what} has shape {tuple(y.shape)}, expected the inputs' {tuple(x.shape)} (a 2x super-resolution "
                    "input is the low-resolution image up-sampled to the target's size)")
        return None

    def output_size(self, num_classes: int, channels: int) -> int:
        return channels

    def loss_scale(self, num_classes: int) -> float:
        return 1.0  # the MSE of normalised images: about the variance, 1

    def output_shape(self, input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, ...]:
        return tuple(input_shape)

    def batch_target(self, y: torch.Tensor) -> torch.Tensor:
        return y.float().div_(255.0)

    def loss(self, output: torch.Tensor, target: torch.Tensor, data: Any, label_smoothing: float = 0.0) -> torch.Tensor:
        normalised = (target - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
        return F.mse_loss(output.float(), normalised)

    def accumulator(self, data: Any) -> Accumulator:
        return _ImageScores(data)
