"""The import paths of the flat layout (0.1), kept for one release: ``policysearch.trainer`` and the
like still import, with a DeprecationWarning naming where the module lives now.

An old path whose module was split (``policysearch.trainer`` became `policysearch.train.trainer` and
`policysearch.train.recipe`) serves the names of all its successors. Nothing is imported until an
old path is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

__all__ = ["MOVED", "install"]

#: Old module -> the modules its names live in now (the first is the one the warning names).
MOVED: dict[str, tuple[str, ...]] = {
    "trainer": ("train.trainer", "train.recipe"),
    "evaluate": ("train.evaluate", "data.preprocess", "device"),
    "robustness": ("train.robustness",),
    "lr_range": ("train.lr_range",),
    "checkpoint": ("train.checkpoint",),
    "energy": ("train.energy",),
    "pruning": ("compression.pruning", "metrics"),
    "distill": ("compression.distill", "metrics"),
    "refine": ("compression.refine",),
    "search_env": ("envs.contract",),
    "workers": ("search.workers",),
    "runstore": ("search.runstore",),
    "pareto": ("search.pareto",),
    "controllers": ("search.controllers.registry", "search.controllers.base", "search.controllers.sb3",
                    "search.controllers.baselines"),
    "population": ("search.controllers.pbt",),
    "es": ("contrib.es",),
    "probe": ("contrib.probe",),
    "peak_rule_search": ("contrib.peak_rule_search",),
    "compare": ("analysis.compare", "processes"),
    "stats": ("analysis.stats",),
    "report": ("analysis.report",),
    "plots": ("analysis.plots", "search.plots"),
    "run_plots": ("analysis.run_plots", "search.plots"),
    "runs": ("analysis.runs",),
}


class _Moved(types.ModuleType):
    """An old path: each attribute is looked up in the new modules, in order."""

    def __init__(self, name: str, successors: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved to {', '.join(successors)} (kept for one release).")
        self._successors = successors

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for module in self._successors:
            value = getattr(importlib.import_module(module), attr, _MISSING)
            if value is not _MISSING:
                return value
        raise AttributeError(f"module {self.__name__!r} (moved to {self._successors[0]}) has no attribute {attr!r}")

    def __dir__(self) -> list[str]:
        return sorted({n for m in self._successors for n in dir(importlib.import_module(m))})


_MISSING = object()


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != "policysearch" or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        old = spec.name.rpartition(".")[2]
        successors = tuple(f"policysearch.{m}" for m in MOVED[old])
        warnings.warn(f"{spec.name} moved to {successors[0]}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return _Moved(spec.name, successors)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    """Serve the old paths (idempotent); ``import policysearch`` calls it."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
