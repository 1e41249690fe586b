"""Energy and emissions (policysearch.train.energy): the stated estimate, and CodeCarbon when it is installed."""

from __future__ import annotations

import importlib.util
import time

import pytest

from policysearch.errors import ConfigError
from policysearch.train.energy import CARBON_INTENSITY_G_PER_KWH, WATTS_PER_CPU_THREAD, EnergyMeter, estimate_energy


def test_the_estimate_is_seconds_times_the_stated_power(monkeypatch) -> None:
    import torch

    monkeypatch.delenv("POLICYSEARCH_POWER_W", raising=False)
    monkeypatch.delenv("POLICYSEARCH_CARBON_INTENSITY", raising=False)
    watts = WATTS_PER_CPU_THREAD * torch.get_num_threads()
    got = estimate_energy(3600.0, "cpu")
    assert got["energy_kwh"] == pytest.approx(watts / 1000)  # an hour at `watts`
    assert got["co2e_kg"] == pytest.approx(watts / 1000 * CARBON_INTENSITY_G_PER_KWH / 1000)
    assert got["energy_source"] == "estimated" and f"{watts:g} W" in got["energy_basis"]
    assert estimate_energy(3600.0, "cuda")["energy_kwh"] > got["energy_kwh"]  # a GPU adds its board power
    monkeypatch.setenv("POLICYSEARCH_POWER_W", "500")
    monkeypatch.setenv("POLICYSEARCH_CARBON_INTENSITY", "100")
    assert estimate_energy(7200.0) == {"energy_kwh": pytest.approx(1.0), "co2e_kg": pytest.approx(0.1),
                                       "energy_source": "estimated",
                                       "energy_basis": "500 W x 7200.0 s, 100 g CO2e/kWh"}
    monkeypatch.setenv("POLICYSEARCH_POWER_W", "lots")
    with pytest.raises(ConfigError, match="POLICYSEARCH_POWER_W"):
        estimate_energy(1.0)


def test_the_meter_estimates_in_tests_and_refuses_an_unknown_mode(monkeypatch) -> None:
    with EnergyMeter("cpu") as meter:  # conftest sets POLICYSEARCH_ENERGY=estimate
        time.sleep(0.01)
    assert meter.result["energy_source"] == "estimated" and meter.result["energy_kwh"] > 0
    assert meter.stop() is meter.result  # idempotent
    monkeypatch.setenv("POLICYSEARCH_ENERGY", "guess")
    with pytest.raises(ConfigError, match="POLICYSEARCH_ENERGY"):
        EnergyMeter("cpu")


@pytest.mark.skipif(importlib.util.find_spec("codecarbon") is None, reason="codecarbon is not installed")
def test_codecarbon_measures_quietly_offline_and_writes_no_file(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # CodeCarbon's default CSV would land here
    with EnergyMeter("cpu", mode="codecarbon") as meter:
        sum(range(200_000))
    assert meter.result["energy_source"] == "measured", meter.result
    assert meter.result["energy_kwh"] >= 0 and "codecarbon" in meter.result["energy_basis"]
    # the forced carbon intensity is the documented default
    if meter.result["energy_kwh"] > 0:
        intensity = meter.result["co2e_kg"] / meter.result["energy_kwh"] * 1000
        assert intensity == pytest.approx(CARBON_INTENSITY_G_PER_KWH, rel=1e-3)
    assert capsys.readouterr().out == ""  # nothing on stdout: the --json contract holds
    assert list(tmp_path.iterdir()) == []


def test_train_and_search_reports_carry_energy(capsys, tmp_path) -> None:
    import json

    from policysearch.cli import main

    argv = ["train", "--dataset", "digits", "--train-size", "300", "--epochs", "1", "--model", "mlp", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    cost = json.loads(captured.out)["cost"]
    assert cost["energy_kwh"] > 0 and cost["co2e_kg"] > 0 and cost["energy_source"] == "estimated"
    assert "kWh" in captured.err and "(estimated)" in captured.err
    out = tmp_path / "run"
    argv = ["augment", "--search-only",
            "--dataset", "digits", "--train-size", "300", "--model", "mlp", "--controller", "random",
            "--budget", "1", "--episode-length", "1", "--steps-per-segment", "1", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["energy_kwh"] > 0 and summary["energy_source"] == "estimated" and "W x" in summary["energy_basis"]
    assert "kWh (estimated)" in capsys.readouterr().out
