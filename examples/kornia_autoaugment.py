"""Load a policysearch policy file into kornia's own AutoAugment, unchanged.

policysearch draws a sub-policy per sample and adds crop / flip / mixup / cutmix / schedules on top;
kornia draws one sub-policy per batch and implements the ops its own way, but reads the same lists.

    python examples/kornia_autoaugment.py runs/demo/search/policy.json
"""

from __future__ import annotations

import json
import sys

import torch
from kornia.augmentation.auto import AutoAugment


def main(path: str | None) -> None:
    if path:
        with open(path) as f:
            policy = json.load(f)
    else:  # no file given: the built-in AutoAugment-CIFAR10 policy, as its JSON would read
        from policysearch.policies import builtin_policy

        policy = json.loads(json.dumps(builtin_policy("autoaugment-cifar10").to_dict()))
    # A scheduled policy holds one piece per stretch of training; take the first piece here.
    body = policy["schedule"][0]["policy"] if policy.get("schedule") else policy
    augment = AutoAugment(policy=body["sub_policies"])
    batch = torch.rand(8, 3, 32, 32)
    print(f"{len(body['sub_policies'])} sub-policies loaded; output {tuple(augment(batch).shape)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
