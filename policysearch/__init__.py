"""policysearch: learn training policies (augmentation, LR schedules, compression) instead of hand-tuning them.

Importing the package is cheap: torch and the other heavy modules load on first use of a name.
"""

from __future__ import annotations

from policysearch import _compat
from policysearch._lazy import lazy_names

__version__ = "0.1.0"

_LAZY = {
    "AugmentPolicy": "policysearch.policies.augment",
    "LearnedSchedule": "policysearch.policies.schedule",
    "load_policy": "policysearch.policies.augment",
    "load_schedule": "policysearch.policies.schedule",
    "prepare": "policysearch.data",
    "load_dataset": "policysearch.data",
    "from_tensors": "policysearch.data",
    "build_model": "policysearch.models",
    "Trainer": "policysearch.train.trainer",
    "TrainConfig": "policysearch.train.trainer",
    "train_run": "policysearch.train.recipe",
    "evaluate": "policysearch.train.evaluate",
    "classification_metrics": "policysearch.metrics",
    "AdaptiveSchedule": "policysearch.policies.adaptive",
    "CompressionPlan": "policysearch.policies.compress",
    "Budget": "policysearch.search.vecenv",
    "run_search": "policysearch.search.driver",
    "compare": "policysearch.analysis.compare",
    "paired_bootstrap": "policysearch.analysis.stats",
    "find_augmentation": "policysearch.protocol.jobs",
    "find_schedule": "policysearch.protocol.jobs",
    "compress_model": "policysearch.protocol.compress",
}

__all__ = ["__version__", *_LAZY]


def _register_envs() -> None:
    """Make `gymnasium.make("policysearch/...")` work after `import policysearch`.

    Only names and entry-point strings are registered: the envs (and torch) load on `make`.
    """
    from gymnasium.envs.registration import register, registry

    for env_id, entry_point in (
        ("policysearch/Augment-v0", "policysearch.envs.augment:AugmentEnvV0"),
        ("policysearch/Augment-v1", "policysearch.envs.augment:AugmentEnv"),
        ("policysearch/Schedule-v0", "policysearch.envs.schedule:ScheduleEnvV0"),
        ("policysearch/Schedule-v1", "policysearch.envs.schedule:ScheduleEnv"),
        ("policysearch/Compress-v0", "policysearch.envs.compress:CompressEnv"),
    ):
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point)


_register_envs()


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
_compat.install()  # the 0.1 import paths (policysearch.trainer, ...), for one release
