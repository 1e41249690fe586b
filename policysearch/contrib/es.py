"""Controller `es`: CMA-ES over the weights of a linear feedback policy (``policies.linear_policy``).

Why not only RL: on Schedule-v1 over a task distribution the effect of the LR on a run's final
accuracy is a few tenths of a point, the spread between tasks and seeds tens of points, and
credit for it comes once per episode. An evolution strategy ranks whole policies by their
returns instead of assigning credit per step, and with common random numbers it ranks them on
equal terms: every candidate of a generation runs the same ``tasks_per_generation`` episodes —
the same task, initial weights and batch order (`SearchVecEnv.seed_each`) — so the differences
between their returns are paired, whatever reward the env gives. Each generation also runs the
centre policy (all-zero weights: on Schedule-v1 the base schedule itself) on those episodes, the
reference every candidate's gain is read against (`summary.json` → `es.generations`); it is not told to
CMA-ES. A generation the budget cuts short is not told either.

The learned controller is the CMA-ES mean after the last complete generation (the distribution's
centre, not its luckiest sample), saved as a `LinearPolicy`; on Schedule-v1 the env exports it as
an `AdaptiveSchedule` (``controller.json`` + ``controller.weights.json``), usable in any loop.

Salimans et al. 2017 (evolution strategies as a scalable alternative to RL) and Hansen's CMA-ES
(the `cmaes` package, part of the `optuna` extra) are the background.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policysearch.errors import ConfigError, MissingExtraError
from policysearch.policies.linear_policy import WEIGHTS_SUFFIX, LinearPolicy
from policysearch.search.controllers.base import Controller, ControllerSettings

if TYPE_CHECKING:
    from policysearch.search.vecenv import SearchVecEnv

DEFAULT_TASKS_PER_GENERATION = 4
# In the weights' units. Schedule-v1's observation has a norm of about 2, so the first generation's
# actions spread by about +-0.6 around the centre (factors 2^+-0.6 at scale 2), not to the bounds.
DEFAULT_SIGMA = 0.3


def run_shared_episodes(recorder: SearchVecEnv, policies: list[Any],
                        seeds: list[int]) -> tuple[np.ndarray, list[list[np.ndarray]], list[list[dict]]] | None:
    """One episode per slot, slot i run by ``policies[i]`` (anything with ``act(obs)``) from seed ``seeds[i]``.

    Returns ``(returns, observations, infos)``: each slot's return, and the observations and step infos
    its episode produced after each of its steps (not the reset's); None if the budget cut it short.
    """
    recorder.seed_each(seeds)
    obs = recorder.reset()
    totals = np.zeros(len(policies))
    observations: list[list[np.ndarray]] = [[] for _ in policies]
    infos: list[list[dict]] = [[] for _ in policies]
    open_ = np.ones(len(policies), dtype=bool)
    while open_.any():
        if recorder.exhausted:
            return None
        actions = np.stack([policy.act(o) for policy, o in zip(policies, obs)])
        obs, rewards, dones, step_infos = recorder.step(actions)
        for i in np.flatnonzero(open_):
            # A finished slot's observation is already the next episode's: its last one is the terminal one.
            last = step_infos[i].get("terminal_observation", obs[i]) if dones[i] else obs[i]
            observations[i].append(np.asarray(last))
            infos[i].append(step_infos[i])
        totals += np.where(open_, rewards, 0.0)
        open_ &= ~np.asarray(dones, dtype=bool)
    return totals, observations, infos


def default_population(dim: int) -> int:
    """CMA-ES's default population for `dim` numbers, 4 + floor(3 ln dim)."""
    return 4 + math.floor(3 * math.log(max(dim, 1)))


class LinearESController(Controller):
    """CMA-ES over a linear policy, ranked on shared episodes (see the module docstring).

    Args:
        population: Candidates per generation (None: CMA-ES's default for the dimension).
        tasks_per_generation: Episodes every candidate runs per generation, the same for all.
        sigma: CMA-ES's initial step size around the all-zero (centre) policy.

    Attributes:
        policy: The current CMA-ES mean as a `LinearPolicy` (None before the first generation).
        generations: One record per complete generation: candidates' mean returns, the centre's,
            the best candidate's, and the size of the CMA-ES mean.
    """

    name = "es"

    def __init__(self, population: int | None = None, tasks_per_generation: int = DEFAULT_TASKS_PER_GENERATION,
                 sigma: float = DEFAULT_SIGMA) -> None:
        if population is not None and population < 4:
            # With fewer, CMA-ES keeps one parent and its covariance update divides by zero.
            raise ConfigError(f"es population is {population}; CMA-ES needs at least 4 candidates")
        if tasks_per_generation < 1:
            raise ConfigError(f"es tasks_per_generation is {tasks_per_generation}, expected at least 1")
        if not sigma > 0:
            raise ConfigError(f"es sigma is {sigma}, expected > 0")
        self.population, self.tasks_per_generation, self.sigma = population, tasks_per_generation, sigma
        self.policy: LinearPolicy | None = None
        self.generations: list[dict[str, Any]] = []

    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        try:
            from cmaes import CMA
        except ImportError as exc:
            raise MissingExtraError("cmaes", "optuna", "controller 'es'") from exc
        if recorder.base.mode == "static":
            raise ConfigError("controller 'es' learns a feedback policy: it needs an env with segments "
                              "(mode='schedule'), not a static one")
        obs_space, act_space = recorder.observation_space, recorder.action_space
        dim = LinearPolicy.size(obs_space, act_space)
        population = self.population = self.population or default_population(dim)
        es = CMA(mean=np.zeros(dim), sigma=self.sigma, population_size=population, seed=seed)
        draws = np.random.default_rng(seed)
        centre = LinearPolicy.from_vector(np.zeros(dim), obs_space, act_space)
        self.policy = centre
        while not recorder.exhausted:
            candidates = [es.ask() for _ in range(population)]
            episode_seeds = [int(s) for s in draws.integers(0, 2**31 - 1, size=self.tasks_per_generation)]
            policies = [LinearPolicy.from_vector(x, obs_space, act_space) for x in candidates] + [centre]
            returns = self._run_generation(recorder, policies, episode_seeds)
            if returns is None:  # the budget ran out inside the generation: nothing to tell
                break
            means = returns.mean(axis=1)
            es.tell([(x, -float(m)) for x, m in zip(candidates, means[:-1])])  # CMA-ES minimises
            self.policy = LinearPolicy.from_vector(es.mean, obs_space, act_space)
            self.generations.append({
                "generation": len(self.generations), "episode_seeds": episode_seeds,
                "centre_return": float(means[-1]), "mean_return": float(means[:-1].mean()),
                "best_return": float(means[:-1].max()),
                "mean_weight_norm": float(np.linalg.norm(es.mean)),
            })

    def _run_generation(self, recorder: SearchVecEnv, policies: list[LinearPolicy],
                        episode_seeds: list[int]) -> np.ndarray | None:
        """Every policy on every episode seed, N at a time; returns[policy, seed], or None if cut short."""
        jobs = [(p, s) for p in range(len(policies)) for s in range(len(episode_seeds))]
        returns = np.zeros((len(policies), len(episode_seeds)))
        n = recorder.num_envs
        for start in range(0, len(jobs), n):
            batch = jobs[start:start + n]
            batch += [batch[-1]] * (n - len(batch))  # idle slots repeat the last job (same result)
            episodes = run_shared_episodes(recorder, [policies[p] for p, _ in batch],
                                           [episode_seeds[s] for _, s in batch])
            if episodes is None:
                return None
            totals = episodes[0]
            for (p, s), total in zip(batch, totals):
                returns[p, s] = total
        return returns

    def summary(self) -> dict[str, Any]:
        return {"es": {"population": self.population, "tasks_per_generation": self.tasks_per_generation,
                       "sigma": self.sigma, "generations": self.generations}}

    def save(self, path: str | Path) -> Path | None:
        """Write the CMA-ES mean as ``<path stem>.weights.json`` beside `path` (the run's controller file),
        the name `AdaptiveSchedule.save` gives it, so the env's closed-loop export rewrites the same file."""
        if self.policy is None:
            return None
        path = Path(path)
        return self.policy.save(path.with_name(path.stem + WEIGHTS_SUFFIX))

def make_es(name: str, settings: ControllerSettings) -> LinearESController:
    return LinearESController(settings.population, settings.es_tasks or DEFAULT_TASKS_PER_GENERATION)
