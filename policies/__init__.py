"""Exportable artefacts: plain, versioned JSON files any PyTorch training loop can use."""

from policysearch.policies.augment import AugmentPolicy, builtin_policy, load_policy
from policysearch.policies.schedule import LearnedSchedule, load_schedule, named_schedule

__all__ = ["AugmentPolicy", "LearnedSchedule", "builtin_policy", "load_policy", "load_schedule", "named_schedule"]
