"""Training and scoring one model: the segment loop (`trainer`), a whole run (`recipe`), evaluation,
robustness under attack, the LR range test, checkpoints and the energy meter.

    from policysearch.train import TrainConfig, train_run
    from policysearch.train.evaluate import evaluate   # one model on one split
"""

from __future__ import annotations

from policysearch._lazy import lazy_names

_LAZY = {
    "Trainer": "policysearch.train.trainer",
    "TrainConfig": "policysearch.train.trainer",
    "RunResult": "policysearch.train.recipe",
    "train_run": "policysearch.train.recipe",
    "lr_range_test": "policysearch.train.lr_range",
    "load_checkpoint": "policysearch.train.checkpoint",
    "save_checkpoint": "policysearch.train.checkpoint",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
