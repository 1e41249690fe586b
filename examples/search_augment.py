"""An augmentation search from Python, top to bottom: the env, a PPO controller, the export.

    python examples/search_augment.py
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

import policysearch  # noqa: F401  (registers policysearch/Augment-v1)
from policysearch.search import Budget, run_search


@dataclass
class Args:
    dataset: str = "digits"
    model: str = "cnn"
    controller: str = "ppo"  # ppo | sac | a2c | random | tpe/cmaes (static mode)
    space: str = "full"  # full | small (5 knobs, for tiny budgets); the centre action is no augmentation
    child_trainings: int = 12
    episode_length: int = 4  # segments per child training; one action per segment
    steps_per_segment: int = 20
    out: str = "runs/example-search"
    seed: int = 0


def main(args: Args) -> None:
    env = gym.make(
        "policysearch/Augment-v1",
        space=args.space,
        dataset=args.dataset,
        model=args.model,
        val_size=0.2,
        episode_length=args.episode_length,
        steps_per_segment=args.steps_per_segment,
        reward_metric="accuracy",
    )
    result = run_search(env, args.controller, Budget(child_trainings=args.child_trainings), args.out, seed=args.seed)
    print(f"best validation accuracy {result.summary['best']['val_metric']:.4f} "
          f"after {result.summary['child_trainings']} child trainings")
    print(f"policy: {result.artefact.describe()}")
    print(f"train with it: policysearch train --dataset {args.dataset} --augment {args.out}/policy.json")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    main(Args(**vars(parser.parse_args())))
