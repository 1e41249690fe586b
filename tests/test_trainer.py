import math

import pytest
import torch

from policysearch.errors import ConfigError, DivergenceError, UnknownNameError
from policysearch.models import MODELS, build_model
from policysearch.policies.augment import builtin_policy
from policysearch.policies.schedule import named_schedule
from policysearch.train.recipe import train_run
from policysearch.train.trainer import TrainConfig, Trainer, soft_cross_entropy


@pytest.mark.parametrize("name", [name for name, spec in MODELS.items() if not spec.dense])  # unet: test_unet.py
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_models_build_for_any_image_size(name, shape):
    model = build_model(name, shape, 7)
    assert model(torch.rand(2, *shape)).shape == (2, 7)


def test_unknown_model_and_optimizer():
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet'"):
        TrainConfig(model="resnt")
    with pytest.raises(UnknownNameError, match="optimizer"):
        TrainConfig(optimizer="adam-w")
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=-1.0)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("lr", 1e4, "a finite number > 0 and <= 1000"),
        ("batch_size", True, "an int >= 1"),
        ("eval_batch_size", 0, "an int >= 1"),
        ("momentum", float("nan"), "a finite number >= 0"),
        ("weight_decay", -1e-4, "a finite number >= 0"),
        ("label_smoothing", 1.0, "a finite number >= 0 and < 1"),
        ("seed", -1, "an int >= 0"),
    ],
)
def test_train_config_names_the_bad_field(field, value, expected):
    with pytest.raises(ConfigError, match=f"^{field} is {value!r}, expected {expected}$"):
        TrainConfig(model="mlp", **{field: value})


def test_set_lr_takes_the_lr_bounds_of_train_config(digits):
    trainer = Trainer(digits, TrainConfig(model="mlp", batch_size=32), total_steps=1)
    for bad in (0.0, float("inf"), 1e6):
        with pytest.raises(ConfigError, match=f"^lr is {bad!r}, expected a finite number > 0 and <= 1000$"):
            trainer.set_lr(bad)


def test_soft_cross_entropy_equals_hard_for_one_hot():
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 2, 2])
    soft = torch.nn.functional.one_hot(y, 4).float()
    assert torch.allclose(soft_cross_entropy(logits, soft), torch.nn.functional.cross_entropy(logits, y))


def _run(data, seed, augment="trivial"):
    trainer = Trainer(data, TrainConfig(model="cnn", batch_size=32, seed=seed), total_steps=12)
    losses = [trainer.train_segment(6, builtin_policy(augment), lr=0.05).train_loss,
              trainer.train_segment(6, builtin_policy(augment), lr=0.01).train_loss]
    return losses, trainer.evaluate("val")


def test_trainer_is_deterministic_for_a_seed_on_cpu(digits):
    a = _run(digits, seed=1)
    b = _run(digits, seed=1)
    c = _run(digits, seed=2)
    assert a == b
    assert a != c


def test_segments_track_progress_lr_and_cost(digits):
    trainer = Trainer(digits, TrainConfig(model="mlp", batch_size=50, seed=0), total_steps=10)
    stats = trainer.train_segment(4, None, lr=0.02)
    assert stats.steps == 4 and stats.images == 200 and trainer.progress == pytest.approx(0.4)
    assert trainer.lr == 0.02 and stats.grad_norm_mean > 0
    trainer.train_segment(6, None, lr=lambda p: 0.1 * (1 - p) + 1e-4)
    assert trainer.progress == 1.0
    assert trainer.lr == pytest.approx(0.1 * (1 - 0.9) + 1e-4)  # LR set before the last step, at progress 0.9
    assert trainer.cost.images == 500 and trainer.cost.train_flops > 0 and trainer.cost.params > 0


def test_training_learns_digits(digits):
    result = train_run(digits, TrainConfig(model="mlp", batch_size=32, seed=0), epochs=6,
                       augment=None, schedule=named_schedule("cosine", 0.05), progress=False)
    assert result.diverged is None
    assert result.val["accuracy"] > 0.8  # chance is 0.1
    assert set(result.test) == {"accuracy", "macro_precision", "macro_recall", "macro_f1", "ece", "nll"}


def test_nan_loss_is_reported_not_raised(digits):
    trainer = Trainer(digits, TrainConfig(model="mlp", batch_size=32, seed=0), total_steps=20)
    stats = trainer.train_segment(20, None, lr=1e3)  # the largest LR accepted (checks.MAX_LR)
    assert stats.diverged and stats.steps < 20
    assert "loss became" in trainer.diverged
    with pytest.raises(DivergenceError):
        trainer.train_segment(1)
    result = train_run(digits, TrainConfig(model="mlp", batch_size=32, seed=0, lr=1e3), epochs=2,
                       schedule=None, progress=False)
    assert result.diverged and math.isnan(result.test["accuracy"])


def test_batch_larger_than_training_set_is_a_clear_error(digits):
    with pytest.raises(ConfigError, match="batch_size"):
        Trainer(digits, TrainConfig(model="mlp", batch_size=10_000), total_steps=1)
