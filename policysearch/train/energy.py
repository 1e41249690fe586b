"""Energy (kWh) and emissions (kg CO2e) of a training run or a search, and how they were obtained.

`EnergyMeter` wraps the work. With CodeCarbon installed (the ``energy`` extra) the figures are
**measured** by its offline tracker; without it (or with ``POLICYSEARCH_ENERGY=estimate``) they are
**estimated** from the measured wall-clock seconds and a stated power draw. The result always says
which (``energy_source``) and on what basis (``energy_basis``).

Estimate, stated:

* power = `WATTS_PER_CPU_THREAD` (10 W: a 16-core, ~160 W server package's share per core) x torch's
  CPU threads, plus `GPU_WATTS` (250 W: the board power of a PCIe data-centre GPU such as the A100
  PCIe) on a CUDA device. ``POLICYSEARCH_POWER_W`` overrides the total (e.g. 700 for an H100 SXM).
* emissions = energy x carbon intensity: `CARBON_INTENSITY_G_PER_KWH` (475 g CO2e/kWh, the IEA's
  2019 world average, CodeCarbon's own fallback); ``POLICYSEARCH_CARBON_INTENSITY`` (g/kWh) overrides it.

CodeCarbon runs quietly and offline: ``OfflineEmissionsTracker`` (no API, no network lookup of the
location), no CSV file, its logger at ERROR (on stderr), process tracking mode; the carbon intensity
is forced to the same figure as the estimate unless ``POLICYSEARCH_COUNTRY`` (ISO 3166 alpha-3,
e.g. "FRA") selects CodeCarbon's data for that country. If the tracker fails in any way the meter
falls back to the estimate: energy accounting never stops a run.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from typing import Any

from policysearch.errors import ConfigError, MissingExtraError

__all__ = ["CARBON_INTENSITY_G_PER_KWH", "ENERGY_MODES", "GPU_WATTS", "WATTS_PER_CPU_THREAD", "EnergyMeter",
           "energy_mode", "estimate_energy", "estimated_power_w"]

WATTS_PER_CPU_THREAD = 10.0
GPU_WATTS = 250.0
CARBON_INTENSITY_G_PER_KWH = 475.0
#: ``POLICYSEARCH_ENERGY``: "auto" (CodeCarbon when installed, else the estimate), "codecarbon", "estimate".
ENERGY_MODES = ("auto", "codecarbon", "estimate")


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"${name} is {text!r}, expected a finite number >= 0")
    return value


def energy_mode() -> str:
    """The mode ``POLICYSEARCH_ENERGY`` selects (default "auto")."""
    mode = os.environ.get("POLICYSEARCH_ENERGY", "auto").strip().lower() or "auto"
    if mode not in ENERGY_MODES:
        raise ConfigError(f"$POLICYSEARCH_ENERGY is {mode!r}, expected one of {', '.join(ENERGY_MODES)}")
    return mode


def _device_type(device: Any) -> str:
    return str(getattr(device, "type", device) or "cpu").split(":")[0]


def estimated_power_w(device: Any = "cpu") -> float:
    """The power the estimate assumes on `device` (see the module docstring)."""
    override = _env_number("POLICYSEARCH_POWER_W", -1.0)
    if override >= 0:
        return override
    import torch

    watts = WATTS_PER_CPU_THREAD * torch.get_num_threads()
    return watts + (GPU_WATTS if _device_type(device) == "cuda" else 0.0)


def estimate_energy(seconds: float, device: Any = "cpu") -> dict[str, Any]:
    """Estimated energy and emissions of `seconds` of work on `device`."""
    power = estimated_power_w(device)
    intensity = _env_number("POLICYSEARCH_CARBON_INTENSITY", CARBON_INTENSITY_G_PER_KWH)
    kwh = power * max(0.0, float(seconds)) / 3.6e6
    return {"energy_kwh": kwh, "co2e_kg": kwh * intensity / 1000.0, "energy_source": "estimated",
            "energy_basis": f"{power:g} W x {seconds:.1f} s, {intensity:g} g CO2e/kWh"}


def _tracker(device: Any) -> Any:
    """A started CodeCarbon offline tracker, or None (not installed, refused, or failed to start)."""
    try:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.emissions_tracker import BaseEmissionsTracker
    except ImportError:
        return None
    logging.getLogger("codecarbon").setLevel(logging.ERROR)  # its INFO / WARNING lines are noise here
    wanted: dict[str, Any] = {
        "project_name": "policysearch", "log_level": "error", "tracking_mode": "process",
        "measure_power_secs": 15, "output_methods": [], "save_to_file": False, "save_to_api": False,
        "allow_multiple_runs": True,
    }
    country = os.environ.get("POLICYSEARCH_COUNTRY", "").strip().upper()
    if country:
        wanted["country_iso_code"] = country
    else:
        wanted["force_carbon_intensity_g_co2e_kwh"] = _env_number("POLICYSEARCH_CARBON_INTENSITY",
                                                                  CARBON_INTENSITY_G_PER_KWH)
    # Keyword names moved between CodeCarbon versions: pass only those this one takes.
    accepted = {*inspect.signature(BaseEmissionsTracker.__init__).parameters,
                *inspect.signature(OfflineEmissionsTracker.__init__).parameters}
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    if "output_methods" in kwargs:  # the newer spelling; the save_to_* flags are deprecated beside it
        kwargs.pop("save_to_file", None)
        kwargs.pop("save_to_api", None)
    try:
        tracker = OfflineEmissionsTracker(**kwargs)
        tracker.start()
    except Exception:  # any failure of an optional meter falls back to the estimate
        return None
    return tracker


class EnergyMeter:
    """Measures (CodeCarbon) or estimates the energy of the work done inside ``with``.

    Args:
        device: the training device ("cpu", "cuda", a torch.device): the estimate's power depends on it.
        mode: "auto", "codecarbon" or "estimate"; None reads ``POLICYSEARCH_ENERGY``.

    After the block, `result` holds ``{"energy_kwh", "co2e_kg", "energy_source": "measured" |
    "estimated", "energy_basis"}``.
    """

    def __init__(self, device: Any = "cpu", mode: str | None = None) -> None:
        if mode is not None and mode not in ENERGY_MODES:
            raise ConfigError(f"mode is {mode!r}, expected one of {', '.join(ENERGY_MODES)}")
        self.device, self.mode = device, mode or energy_mode()
        self.result: dict[str, Any] = {}
        self._tracker: Any = None
        self._started = 0.0

    def __enter__(self) -> EnergyMeter:
        self._tracker = _tracker(self.device) if self.mode != "estimate" else None
        if self._tracker is None and self.mode == "codecarbon":
            import importlib.util

            if importlib.util.find_spec("codecarbon") is None:
                raise MissingExtraError("codecarbon", "energy", "measuring energy (POLICYSEARCH_ENERGY=codecarbon)")
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> dict[str, Any]:
        """End the measurement (idempotent) and return `result`."""
        if self.result:
            return self.result
        seconds = time.perf_counter() - self._started
        measured = None
        if self._tracker is not None:
            try:
                self._tracker.stop()
                measured = self._tracker.final_emissions_data
            except Exception:  # fall back to the estimate, as documented
                measured = None
        kwh = getattr(measured, "energy_consumed", None)
        if measured is not None and isinstance(kwh, (int, float)) and kwh >= 0:
            from codecarbon import __version__

            self.result = {"energy_kwh": float(kwh), "co2e_kg": float(measured.emissions or 0.0),
                           "energy_source": "measured",
                           "energy_basis": f"codecarbon {__version__}, {seconds:.1f} s, process tracking"}
        else:
            self.result = estimate_energy(seconds, self.device)
        return self.result
