"""The search layer: the driver, the vectorised env it drives, workers, the run store, the env contract,
Pareto fronts, and the controllers with their one registry (`policysearch.search.controllers`).

    from policysearch.search import Budget, run_search
"""

from __future__ import annotations

from policysearch._lazy import lazy_names

_LAZY = {
    "Budget": "policysearch.search.vecenv",
    "SearchVecEnv": "policysearch.search.vecenv",
    "episode_score": "policysearch.search.vecenv",
    "SearchResult": "policysearch.search.driver",
    "read_episodes": "policysearch.search.driver",
    "run_search": "policysearch.search.driver",
    "SearchEnv": "policysearch.envs.contract",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
