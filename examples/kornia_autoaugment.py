"""Load a policysearch policy file into kornia's own AutoAugment.

policysearch draws a sub-policy per sample and adds crop / flip / erasing / mixup / cutmix and
schedules on top; kornia draws one sub-policy per batch and implements the ops its own way, but
reads the same lists. `AugmentPolicy.kornia_policy` gives them for any policy file:

* ``kornia_policy(phase=i)``: the sub-policies of phase i (a schedule's piece i, from
  ``policy.starts[i]`` on; a policy without a schedule has the one phase 0): swap kornia's
  AutoAugment at those points of training to follow the schedule;
* ``kornia_policy()``: the whole policy flattened into one list, each phase weighted by its share
  of training: one static AutoAugment for the whole run.

A phase without ops gives ``[[]]``, kornia's identity, so every file loads.

    python examples/kornia_autoaugment.py runs/demo/search/policy.json
"""

from __future__ import annotations

import sys

import torch
from kornia.augmentation.auto import AutoAugment

from policysearch.policies import AugmentPolicy, builtin_policy


def main(path: str | None) -> None:
    # No file given: the built-in AutoAugment-CIFAR10 policy.
    policy = AugmentPolicy.load(path) if path else builtin_policy("autoaugment-cifar10")
    batch = torch.rand(8, 3, 32, 32)

    # Per phase: one AutoAugment per piece of the schedule.
    for i, start in enumerate(policy.starts or (0.0,)):
        subs = policy.kornia_policy(phase=i)
        out = AutoAugment(policy=subs)(batch)
        print(f"phase {i} (from progress {start:.2f}): {len(subs)} sub-policies, output {tuple(out.shape)}")

    # Flattened: one AutoAugment for the whole run.
    subs = policy.kornia_policy()
    out = AutoAugment(policy=subs)(batch)
    print(f"flattened: {len(subs)} sub-policies, output {tuple(out.shape)}")
    # Crop, flip, erasing and mixup / cutmix are not part of AutoAugment: kornia's RandomCrop,
    # RandomHorizontalFlip, RandomErasing, RandomMixUpV2 and RandomCutMixV2 add them.
    print(f"the whole policy, as policysearch applies it: {policy.describe()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
