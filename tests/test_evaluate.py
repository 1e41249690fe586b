"""policysearch.train.evaluate: one model on one split, the same figures whoever calls it."""

import pytest
import torch

from policysearch.errors import ConfigError
from policysearch.metrics import METRIC_NAMES, classification_metrics
from policysearch.train.evaluate import evaluate, predict
from policysearch.train.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def trained(digits):
    trainer = Trainer(digits, TrainConfig(model="cnn", batch_size=32, seed=3, device="cpu"), total_steps=8)
    trainer.train_segment(8, lr=0.05)
    return trainer


def test_trainer_evaluate_is_evaluate(trained, digits):
    for split in ("train", "val", "test"):
        assert trained.evaluate(split) == evaluate(trained.model, digits, split)


def test_normalises_with_the_training_statistics(trained, digits):
    x, y = digits.split_arrays("val")
    model = trained.model.eval()
    with torch.no_grad():
        logits = model((x.float() / 255.0 - digits.mean[None, :, None, None]) / digits.std[None, :, None, None])
    expected = classification_metrics(logits, y, digits.num_classes)
    got = evaluate(model, digits, "val")
    assert set(got) == set(METRIC_NAMES)
    assert all(got[k] == pytest.approx(expected[k], abs=1e-6) for k in METRIC_NAMES)


def test_batching_does_not_change_the_figures_and_leaves_eval_mode_and_rng(trained, digits):
    model = trained.model.train()
    rng = torch.random.get_rng_state()
    small = evaluate(model, digits, "test", batch_size=7)
    assert not model.training
    assert torch.equal(torch.random.get_rng_state(), rng), "evaluation must not draw from the global RNG"
    logits, y = predict(model, digits, "test")
    assert logits.dtype == torch.float32 and len(logits) == len(y) == len(digits.y_test)
    full = evaluate(model, digits, "test")
    assert all(small[k] == pytest.approx(full[k], abs=1e-6) for k in METRIC_NAMES)


def test_bad_batch_size(trained, digits):
    with pytest.raises(ConfigError, match="batch_size is 0, expected an int >= 1"):
        evaluate(trained.model, digits, "val", batch_size=0)
