"""Searchers kept to reproduce recorded results, not recommended to users.

- `es`: CMA-ES over a linear feedback policy, candidates ranked on shared episodes (`contrib.es`).
- `probe`: a gain table over held LR factors after a probe segment, and the policy fitted to it (`contrib.probe`).
- `policysearch peak-rule`: the full-information table over a task distribution that `zoo:peak-rule`
  was fitted to (`contrib.peak_rule_search`).

Their results are in benchmarks/RESULTS.md. The controllers register themselves in the one registry
(`policysearch.search.controllers.registry`) through the ``policysearch.controllers`` entry point that
names `register` below, so the search layer never imports this package.
"""

from __future__ import annotations

__all__ = ["register"]


def register() -> None:
    """Add `es` and `probe` to the controller registry (called by the registry's plug-in loader)."""
    from policysearch.search.controllers.registry import ControllerInfo
    from policysearch.search.controllers.registry import register as add

    add(ControllerInfo("es", "policysearch.contrib.es:make_es", status="contrib", reads=("population", "es_tasks"),
                       extra="optuna", summary="CMA-ES over a linear feedback policy on shared episodes"))
    add(ControllerInfo("probe", "policysearch.contrib.probe:make_probe", status="contrib",
                       env_check="policysearch.contrib.probe:check_env",
                       summary="probe, decide once, hold: a policy fitted to a gain table over held LR factors"))
