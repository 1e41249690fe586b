"""What a model learns to predict: one class per task decides the target format, the split, the loss,
the metrics and how augmentation treats the target (`Task`).

- ``classification``: one label per image (int64 ``(N,)``); accuracy, macro F1, ECE, NLL.
- ``segmentation``: an integer mask per image (uint8 ``(N, H, W)``, class indices, `IGNORE_INDEX`
  where no label applies); mean IoU, pixel accuracy, per-class IoU.
- ``restoration``: an image target (uint8 ``(N, C, H, W)``, the clean image; the input is the
  degraded one at the same size, e.g. noisy, or up-sampled from half size for 2x super-resolution);
  PSNR and SSIM.

The rest of the code asks the data's task (``get_task(data.task)``) and never branches on its name.
"""

from __future__ import annotations

from policysearch.errors import UnknownNameError
from policysearch.tasks.base import IGNORE_INDEX, Accumulator, Task
from policysearch.tasks.classification import Classification
from policysearch.tasks.dense import Restoration, Segmentation

__all__ = ["IGNORE_INDEX", "TASKS", "Accumulator", "Classification", "Restoration", "Segmentation", "Task",
           "get_task"]

_REGISTRY: dict[str, Task] = {t.name: t for t in (Classification(), Segmentation(), Restoration())}
TASKS: tuple[str, ...] = tuple(_REGISTRY)


def get_task(task: str | Task | None) -> Task:
    """The task object of a name (None: classification); a Task is returned as is."""
    if isinstance(task, Task):
        return task
    if task is None:
        return _REGISTRY["classification"]
    if task not in _REGISTRY:
        raise UnknownNameError("task", str(task), TASKS)
    return _REGISTRY[task]
