"""Controller `es`: the linear policy (centre = base schedule, bounds, files), CMA-ES ranking candidates
on shared episodes, and the exported closed-loop controller driving a plain run and the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from policysearch.contrib.es import LinearESController, default_population
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.policies.linear_policy import LinearPolicy
from policysearch.search import Budget, run_search

OBS = spaces.Box(-10.0, 10.0, shape=(3,), dtype=np.float32)
ACT = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)


def test_zero_weights_give_the_centre_action_and_actions_stay_in_bounds() -> None:
    centre = LinearPolicy(np.zeros((1, 4)), OBS, ACT)
    assert centre.act([3.0, -2.0, 7.0]) == pytest.approx([0.0])
    big = LinearPolicy([[100.0, 0.0, 0.0, 0.0]], OBS, ACT)
    assert big.act([10.0, 0.0, 0.0])[0] == pytest.approx(1.0) and big.act([-10.0, 0.0, 0.0])[0] == pytest.approx(-1.0)
    bias = LinearPolicy([[0.0, 0.0, 0.0, 0.5]], OBS, ACT)
    assert bias.act([1.0, 1.0, 1.0])[0] == pytest.approx(np.tanh(0.5))
    # another box: tanh's range mapped onto [low, high]
    box = spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    two = LinearPolicy(np.zeros((2, 4)), OBS, box)
    assert two.act([0.0, 0.0, 0.0]) == pytest.approx([0.5, 0.0])
    assert LinearPolicy.size(OBS, box) == 8
    assert np.array_equal(LinearPolicy.from_vector(np.arange(8.0), OBS, box).weights, np.arange(8.0).reshape(2, 4))


def test_linear_policy_refuses_bad_weights_and_round_trips(tmp_path) -> None:
    with pytest.raises(ConfigError, match="shape"):
        LinearPolicy(np.zeros((1, 3)), OBS, ACT)
    with pytest.raises(ConfigError, match="finite"):
        LinearPolicy([[0.0, np.nan, 0.0, 0.0]], OBS, ACT)
    policy = LinearPolicy([[0.1, -0.2, 0.3, 0.4]], OBS, ACT)
    path = policy.save(tmp_path / "w.json")
    assert np.array_equal(LinearPolicy.load(path, OBS, ACT).weights, policy.weights)
    with pytest.raises(PolicyFormatError, match="weights"):
        LinearPolicy.load(path, spaces.Box(-1, 1, shape=(5,)), ACT)  # another observation size
    data = json.loads(path.read_text())
    data["weights"] = [[0.1, None, 0.3, 0.4]]  # what a NaN becomes in strict JSON
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(PolicyFormatError, match="weights"):
        LinearPolicy.load(tmp_path / "bad.json", OBS, ACT)


class Bandit:
    """A recorder stand-in: episodes of 2 steps, observation [1, seed parity]; each step's reward is
    -(action - 0.6)^2 plus a per-seed offset, so only the pairing on equal seeds ranks policies fairly."""

    def __init__(self, n: int, budget_episodes: int) -> None:
        self.num_envs, self.observation_space, self.action_space = n, spaces.Box(-1, 1, (2,)), ACT
        self.base = SimpleNamespace(mode="schedule")
        self.budget, self.episodes, self.reset_seeds = budget_episodes, 0, []
        self._seeds: list[int] = [0] * n
        self._t = 0

    @property
    def exhausted(self) -> bool:
        return self.episodes >= self.budget

    def seed_each(self, seeds: list[int]) -> None:
        self._seeds = list(seeds)

    def reset(self) -> np.ndarray:
        self.reset_seeds.append(list(self._seeds))
        self._t = 0
        return np.array([[1.0, s % 2] for s in self._seeds], dtype=np.float32)

    def step(self, actions: np.ndarray):
        self._t += 1
        offsets = np.array([(s % 1000) / 100.0 for s in self._seeds])
        rewards = -(actions[:, 0] - 0.6) ** 2 + offsets
        done = self._t == 2
        if done:
            self.episodes += self.num_envs
        obs = np.array([[1.0, s % 2] for s in self._seeds], dtype=np.float32)
        return obs, rewards, np.full(self.num_envs, done), [{}] * self.num_envs


def test_es_moves_towards_the_best_action_on_shared_episodes() -> None:
    population, tasks = 6, 3
    jobs = (population + 1) * tasks  # the candidates and the centre, each on every episode: 21
    per_generation = jobs + 1  # on 2 slots the last batch repeats the last job
    bandit = Bandit(n=2, budget_episodes=12 * per_generation)
    controller = LinearESController(population=population, tasks_per_generation=tasks, sigma=0.3)
    controller.run(bandit, seed=0)
    assert len(controller.generations) == 12
    # every generation gives each of its episode seeds to every candidate and to the centre
    batches = [s for seeds in bandit.reset_seeds for s in seeds]
    for g, record in enumerate(controller.generations):
        chunk = batches[g * per_generation:(g + 1) * per_generation]
        assert sorted(chunk[:-1]) == sorted(record["episode_seeds"] * (population + 1))
        assert chunk[-1] == chunk[-2] == record["episode_seeds"][-1]
    first, last = controller.generations[0], controller.generations[-1]
    # the centre (action 0) loses 2 x 0.36 to the best action; the learned mean acts close to 0.6
    assert last["mean_return"] - last["centre_return"] > first["mean_return"] - first["centre_return"]
    assert abs(float(controller.policy.act([1.0, 0.0])[0]) - 0.6) < 0.15
    assert controller.summary()["es"]["population"] == population


def test_es_refuses_bad_settings_and_a_static_env() -> None:
    assert default_population(14) == 11
    with pytest.raises(ConfigError, match="at least 4"):
        LinearESController(population=3)
    with pytest.raises(ConfigError, match="at least 1"):
        LinearESController(tasks_per_generation=0)
    static = Bandit(n=1, budget_episodes=4)
    static.base.mode = "static"
    with pytest.raises(ConfigError, match="segments"):
        LinearESController().run(static, seed=0)


def _schedule_env(digits):
    return gym.make("policysearch/Schedule-v1", data=digits, model="mlp", episode_length=2, steps_per_segment=2,
                    batch_size=32, scale=2.0)


def test_es_search_exports_a_closed_loop_controller(digits, tmp_path) -> None:
    from policysearch.policies.adaptive import AdaptiveSchedule, resolve_schedule
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    population, tasks = 4, 2
    budget = 2 * (population + 1) * tasks  # two generations
    result = run_search(_schedule_env(digits), "es", Budget(child_trainings=budget), tmp_path / "run", seed=0,
                        progress=False, population=population, es_tasks=tasks)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["files"]["closed_loop"] == "controller.json"
    assert summary["files"]["controller"] == "controller.weights.json"
    assert len(summary["es"]["generations"]) == 2 and summary["child_trainings"] == budget
    # within a generation the children of one episode seed start from the same weights
    by_seed: dict[int, set] = {}
    for episode in result.episodes[: (population + 1) * tasks]:
        by_seed.setdefault(episode["child_seed"], set()).add(json.dumps(episode["start_val"]))
    assert len(by_seed) == tasks and all(len(v) == 1 for v in by_seed.values())
    adaptive = AdaptiveSchedule.load(tmp_path / "run" / "controller.json")
    assert adaptive.algo == "linear"
    saved = LinearPolicy.load(tmp_path / "run" / "controller.weights.json", adaptive.model.observation_space,
                              adaptive.model.action_space)
    obs = np.linspace(-1, 1, adaptive.space.dim)
    assert adaptive.model.act(obs) == pytest.approx(saved.act(obs))
    schedule = resolve_schedule(tmp_path / "run" / "controller.json", base_lr=0.05)
    assert isinstance(schedule, AdaptiveSchedule) and schedule.algo == "linear"
    run = train_run(digits, TrainConfig(model="mlp", batch_size=32, seed=0), 1, schedule=schedule, progress=False)
    assert 0.0 <= run.test["accuracy"] <= 1.0
    # its decisions, as factors of the base schedule within [1/scale, scale], one per segment
    assert len(run.history) == 2 and all(0.5 <= h["factor"] <= 2.0 for h in run.history)


def test_cli_es_options(capsys, tmp_path) -> None:
    from policysearch.cli import main

    out = tmp_path / "es"
    argv = ["schedule", "--search-only",
            "--dataset", "digits", "--train-size", "300", "--model", "mlp", "--controller", "es",
            "--population", "4", "--es-tasks", "1", "--budget", "5", "--episode-length", "2",
            "--steps-per-segment", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["es"]["tasks_per_generation"] == 1 and len(summary["es"]["generations"]) == 1
    assert main(["train", "--dataset", "digits", "--train-size", "300", "--epochs", "1", "--model", "mlp",
                 "--no-progress", "--schedule", str(out / "controller.json")]) == 0
    capsys.readouterr()
    code = main(["schedule", "--search-only",
                 "--dataset", "digits", "--controller", "ppo", "--es-tasks", "2", "--budget", "1",
                 "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "es_tasks" in err and "Traceback" not in err


@pytest.mark.parametrize("crash_at", [7, 13])  # in the first generation, and in the second
def test_es_resumes_after_a_crash_like_an_uninterrupted_run(digits, tmp_path, crash_at) -> None:
    from search_helpers import stable
    from test_resume import Crash, CrashAt

    from policysearch.search import read_episodes

    budget, kwargs = Budget(child_trainings=10), {"seed": 3, "progress": False, "population": 4, "es_tasks": 1}
    whole = run_search(_schedule_env(digits), "es", budget, tmp_path / "whole", **kwargs)
    with pytest.raises(Crash):
        run_search(CrashAt(_schedule_env(digits), crash_at), "es", budget, tmp_path / "cut", **kwargs)
    assert len(read_episodes(tmp_path / "cut" / "episodes.jsonl")) < 10
    resumed = run_search(_schedule_env(digits), "es", budget, tmp_path / "cut", resume=True, **kwargs)
    assert stable(resumed.episodes) == stable(whole.episodes)
    assert resumed.summary["es"] == whole.summary["es"]
    assert (tmp_path / "cut" / "controller.weights.json").read_text() == \
        (tmp_path / "whole" / "controller.weights.json").read_text()
