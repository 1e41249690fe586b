"""Tests for policysearch/device.py: the one device resolver, and the check that whatever trains on
prepared data names the data's device. CUDA is simulated where a test needs it on a CPU machine."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import pytest
import torch

from policysearch.device import device_for_data, resolve_device, same_device
from policysearch.errors import ConfigError
from policysearch.train.trainer import TrainConfig, Trainer


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend torch sees one CUDA device (nothing is ever allocated on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_auto_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


def test_known_devices_and_torch_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu", "tpu", "xpu", "meta", "", 0, torch.device("meta")])
def test_unknown_device_is_a_config_error(device: object) -> None:
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda, cuda:N or mps") as info:
        resolve_device(device)  # type: ignore[arg-type]
    if device == "gpu":
        assert str(info.value) == "device is 'gpu', expected auto, cpu, cuda, cuda:N or mps"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_a_config_error(device: str) -> None:
    with pytest.raises(ConfigError, match=f"device is '{device}' but CUDA is not available.*--device cpu"):
        resolve_device(device)


def test_cuda_index_past_the_visible_gpus(fake_cuda: None) -> None:
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="device is 'cuda:5' but this machine's CUDA devices are cuda:0; use"):
        resolve_device("cuda:5")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_without_mps_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="device is 'mps' but MPS is not available"):
        resolve_device("mps")


def test_same_device_fills_in_the_current_cuda_index(fake_cuda: None) -> None:
    assert same_device("cuda", "cuda:0") and same_device("cpu", torch.device("cpu"))
    assert not same_device("cuda", "cpu")


def test_device_for_data_follows_or_matches_the_data(fake_cuda: None) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert device_for_data(None, cpu) == cpu
    assert device_for_data("auto", cpu) == cpu  # auto follows the data, even where CUDA exists
    assert device_for_data("cpu", cpu) == cpu
    assert device_for_data("cuda:0", cuda) == cuda
    with pytest.raises(ConfigError, match="TrainConfig.device is 'cpu' but the data lives on cuda"):
        device_for_data("cpu", cuda, "TrainConfig.device")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
        device_for_data("gpu", cpu)


def test_train_config_checks_its_device_on_construction() -> None:
    with pytest.raises(ConfigError, match="device is 'gpu', expected auto"):
        TrainConfig(model="mlp", device="gpu")
    assert TrainConfig(model="mlp", device=torch.device("cpu")).device == "cpu"  # stays JSON-able


def test_trainer_refuses_a_config_device_other_than_the_data_s(digits, fake_cuda: None) -> None:
    # The data only claims to be on CUDA: the check must fire before any tensor is touched.
    on_cuda = dataclasses.replace(digits, device=torch.device("cuda"))
    with pytest.raises(ConfigError, match="TrainConfig.device is 'cpu' but the data lives on cuda"):
        Trainer(on_cuda, TrainConfig(model="mlp", batch_size=32, device="cpu"), total_steps=1)
    trainer = Trainer(digits, TrainConfig(model="mlp", batch_size=32, device="auto"), total_steps=1)
    assert trainer.device == digits.device


@pytest.mark.parametrize("env_id", ["policysearch/Augment-v0", "policysearch/Schedule-v0"])
def test_env_device_is_not_ignored_when_data_is_given(digits, fake_cuda: None, env_id: str) -> None:
    on_cuda = dataclasses.replace(digits, device=torch.device("cuda"))
    with pytest.raises(ConfigError, match="device is 'cpu' but the data lives on cuda"):
        gym.make(env_id, data=on_cuda, model="mlp", device="cpu", batch_size=32)
    env = gym.make(env_id, data=digits, model="mlp", device="auto", batch_size=32)
    assert env.unwrapped.data is digits


def test_compress_env_device_is_not_ignored_when_data_is_given(digits, fake_cuda: None) -> None:
    pytest.importorskip("torch_pruning")
    from policysearch.models import build_model

    on_cuda = dataclasses.replace(digits, device=torch.device("cuda"))
    with pytest.raises(ConfigError, match="device is 'cpu' but the data lives on cuda"):
        gym.make("policysearch/Compress-v0", teacher=build_model("mlp", digits.input_shape, 10), data=on_cuda,
                 device="cpu")
