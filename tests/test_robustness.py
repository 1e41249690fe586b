"""FGSM / PGD accuracy (policysearch.train.robustness) against cases worked out by hand, and as a reward metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from policysearch.errors import ConfigError, UnknownNameError
from policysearch.train.robustness import attack_accuracy, fgsm, pgd


def _linear() -> nn.Linear:
    """logits = (x0, x1): class 0 wins when x0 > x1."""
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    return model


def test_fgsm_moves_each_pixel_by_eps_against_the_label_as_computed_by_hand() -> None:
    # For y = 0, d CE / dx = p1 * (W1 - W0) = p1 * (-1, 1): its sign is (-1, +1) whatever p1 > 0 is.
    model = _linear()
    x, y = torch.tensor([[0.6, 0.4]]), torch.tensor([0])
    small = fgsm(model, x, y, 0.05)
    assert small[0].tolist() == pytest.approx([0.55, 0.45])
    assert model(small).argmax(1).item() == 0  # logits (0.55, 0.45): still right
    large = fgsm(model, x, y, 0.15)
    assert large[0].tolist() == pytest.approx([0.45, 0.55])
    assert model(large)[0].tolist() == pytest.approx([0.45, 0.55])  # now class 1 wins: fooled
    # Clipped to the image range: 0.1 - 0.2 stops at 0 and a pixel at 1.0 cannot move up.
    assert fgsm(model, torch.tensor([[0.1, 1.0]]), y, 0.2)[0].tolist() == pytest.approx([0.0, 1.0])
    # For y = 1 the sign flips: (+1, -1).
    assert fgsm(model, torch.tensor([[0.1, 1.0]]), torch.tensor([1]), 0.2)[0].tolist() == pytest.approx([0.3, 0.8])
    assert model.weight.grad is None  # only the input gradient was taken


def test_pgd_stays_in_the_ball_and_matches_the_hand_case() -> None:
    model = _linear()
    x, y = torch.tensor([[0.6, 0.4]]), torch.tensor([0])
    adv = pgd(model, x, y, 0.15, steps=10)
    assert (adv - x).abs().max() <= 0.15 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert adv[0].tolist() == pytest.approx([0.45, 0.55])  # 10 steps of 0.0375 reach the corner of the ball
    assert torch.equal(pgd(model, x, y, 0.0), x)  # eps = 0 leaves the image alone


def test_attack_accuracy_at_eps_zero_is_clean_and_attacks_only_lower_it(digits) -> None:
    from policysearch.train.evaluate import evaluate
    from policysearch.train.trainer import TrainConfig, Trainer

    trainer = Trainer(digits, TrainConfig(model="mlp", batch_size=64, seed=0), total_steps=20)
    trainer.train_segment(20)
    clean = evaluate(trainer.model, digits, "val")["accuracy"]
    zero = attack_accuracy(trainer.model, digits, "val", 0.0, pgd_steps=2)
    assert zero == {"fgsm_accuracy": pytest.approx(clean), "pgd_accuracy": pytest.approx(clean)}
    attacked = attack_accuracy(trainer.model, digits, "val", 0.1, pgd_steps=3)
    assert attacked["pgd_accuracy"] <= attacked["fgsm_accuracy"] + 0.02 and attacked["fgsm_accuracy"] < clean
    assert attack_accuracy(trainer.model, digits, "val", 0.1, pgd_steps=3) == attacked  # seeded, no global RNG
    with pytest.raises(ConfigError, match="eps"):
        attack_accuracy(trainer.model, digits, "val", 8.0)
    with pytest.raises(UnknownNameError, match="Did you mean 'pgd'"):
        attack_accuracy(trainer.model, digits, "val", 0.1, ("pdg",))


def test_fgsm_accuracy_is_a_reward_metric_the_envs_compute(digits) -> None:
    import gymnasium as gym
    import numpy as np

    from policysearch.metrics import REWARD_METRICS, reward_value

    assert "fgsm_accuracy" in REWARD_METRICS
    with pytest.raises(ConfigError, match="fgsm_accuracy"):
        reward_value({"accuracy": 0.5}, "fgsm_accuracy")
    env = gym.make("policysearch/Augment-v0", data=digits, model="mlp", episode_length=1, steps_per_segment=2,
                   batch_size=32, reward_metric="fgsm_accuracy")
    _, info = env.reset(seed=0)
    assert 0.0 <= info["val"]["fgsm_accuracy"] <= info["val"]["accuracy"]
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert 0.0 <= info["val"]["fgsm_accuracy"] <= 1.0 and np.isfinite(reward)
