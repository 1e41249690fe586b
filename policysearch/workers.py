"""Where child trainings run: in this process, in worker processes, or in Ray actors.

A pool holds N copies of a search env, one per worker, and runs a method on several of them at
once: `submit(i, method, *args)` for each, then `result(i)` for each. The search driver
(`policysearch.search.SearchVecEnv`) builds the vectorised env every controller drives on top of a
pool, so the controllers do not know which backend runs the children.

- `InProcessPool`: N = 1, the env itself, no copy (the default).
- `SerialPool`: N copies of the env in this process, run one after another: a population (`pbt`)
  larger than the machine has cores, or children too small to pay for worker processes.
- `ProcessPool`: one stable-baselines3 `SubprocVecEnv` worker process per child (SB3's worker loop,
  not a home-made one), one torch thread each unless told otherwise.
- `RayPool`: one Ray actor per child, with its own `num_cpus` / `num_gpus` (the `ray` extra), on a
  local Ray or an existing cluster (`address`).

A worker that dies (killed, out of memory, segfault; a lost actor) raises `WorkerDied` from
`result`; `restart(i)` gives slot i a fresh worker, into which the driver restores the child's
last state and retries it once.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Callable
from typing import Any

from policysearch.errors import ConfigError, MissingExtraError

BACKENDS = ("local", "ray")


class WorkerDied(RuntimeError):
    """The worker running a child is gone; the message says how."""


class WorkerPool(abc.ABC):
    """N workers, each holding one env. Call order per round: `submit` for some slots, then
    `result` for exactly those slots."""

    n: int

    @abc.abstractmethod
    def submit(self, i: int, method: str, *args: Any, **kwargs: Any) -> None:
        """Start ``env.method(*args)`` on worker `i` (asynchronously where the backend allows);
        a name starting with "." reads that attribute of the env instead (".last_seconds")."""

    @abc.abstractmethod
    def result(self, i: int) -> Any:
        """The return value of the call submitted to worker `i`; raises WorkerDied."""

    @abc.abstractmethod
    def restart(self, i: int) -> None:
        """Replace worker `i` by a fresh one holding a new env."""

    def close(self) -> None:  # noqa: B027  (optional: pools without processes have nothing to stop)
        """Stop every worker."""

    def call(self, slots: list[int], method: str, args: list[tuple[Any, ...]] | None = None,
             kwargs: list[dict[str, Any]] | None = None) -> list[Any]:
        """Run `method` on `slots` at once; a died worker's entry is its WorkerDied exception."""
        args = args or [()] * len(slots)
        kwargs = kwargs or [{}] * len(slots)
        for i, a, k in zip(slots, args, kwargs):
            self.submit(i, method, *a, **k)
        out: list[Any] = []
        for i in slots:
            try:
                out.append(self.result(i))
            except WorkerDied as exc:
                out.append(exc)
        return out


class InProcessPool(WorkerPool):
    """The env itself, in this process: one worker, no copy, nothing to restart. `reset` and
    `step` go through the env's wrappers; every other method is the unwrapped env's."""

    def __init__(self, env: Any) -> None:
        self.n, self.env, self._pending = 1, env, None

    def submit(self, i: int, method: str, *args: Any, **kwargs: Any) -> None:
        self._pending = (method, args, kwargs)

    def result(self, i: int) -> Any:
        assert self._pending is not None, "submit() first"
        method, args, kwargs = self._pending
        self._pending = None
        if method.startswith("."):
            return getattr(self.env.unwrapped, method[1:])
        target = self.env if method in ("reset", "step") else self.env.unwrapped
        return getattr(target, method)(*args, **kwargs)

    def restart(self, i: int) -> None:
        raise WorkerDied("the in-process env cannot be restarted")


class SerialPool(WorkerPool):
    """N copies of an env in this process, each built by `env_fn` (as a worker process would build
    it); a submitted call runs when its result is asked for, so the children take turns."""

    def __init__(self, env_fn: Callable[[], Any], n: int) -> None:
        self.n, self._make = n, env_fn
        self.envs = [env_fn() for _ in range(n)]
        self._pending: dict[int, tuple[str, tuple[Any, ...], dict[str, Any]]] = {}

    def submit(self, i: int, method: str, *args: Any, **kwargs: Any) -> None:
        self._pending[i] = (method, args, kwargs)

    def result(self, i: int) -> Any:
        method, args, kwargs = self._pending.pop(i)
        if method.startswith("."):
            return getattr(self.envs[i], method[1:])
        return getattr(self.envs[i], method)(*args, **kwargs)

    def restart(self, i: int) -> None:
        self.envs[i] = self._make()


def _threaded(env_fn: Callable[[], Any], threads: int | None) -> Callable[[], Any]:
    def make() -> Any:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
            os.environ["OMP_NUM_THREADS"] = str(threads)
        return env_fn()
    return make


class ProcessPool(WorkerPool):
    """One SB3 `SubprocVecEnv` worker process per child.

    Args:
        env_fn: builds one env (pickled to each worker with cloudpickle), or one function per worker.
        n: workers.
        threads: torch threads per worker (1: the right setting for N processes on N cores).
    """

    def __init__(self, env_fn: Callable[[], Any] | list[Callable[[], Any]], n: int, threads: int | None = 1) -> None:
        fns = env_fn if isinstance(env_fn, list) else [env_fn] * n
        self.n, self._makes = n, [_threaded(fn, threads) for fn in fns]
        self._slots = [self._start(i) for i in range(n)]

    def _start(self, i: int) -> Any:
        from stable_baselines3.common.vec_env import SubprocVecEnv

        return SubprocVecEnv([self._makes[i]])

    def pid(self, i: int) -> int:
        """The process id of worker `i` (for tests and monitoring)."""
        return int(self._slots[i].processes[0].pid)

    def submit(self, i: int, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            # SB3's worker loop runs ``env.<method>(*args)`` for "env_method", reads for "get_attr".
            command = ("get_attr", method[1:]) if method.startswith(".") else ("env_method", (method, args, kwargs))
            self._slots[i].remotes[0].send(command)
        except (BrokenPipeError, ConnectionError, OSError) as exc:
            self._dead = getattr(self, "_dead", {})
            self._dead[i] = exc

    def result(self, i: int) -> Any:
        dead = getattr(self, "_dead", {}).pop(i, None)
        if dead is not None:
            raise WorkerDied(f"worker {i} is gone ({type(dead).__name__})")
        try:
            return self._slots[i].remotes[0].recv()
        except (EOFError, ConnectionError, OSError) as exc:
            code = self._slots[i].processes[0].exitcode
            raise WorkerDied(f"worker {i} died (exit code {code}, {type(exc).__name__})") from None

    def restart(self, i: int) -> None:
        old = self._slots[i]
        for process in old.processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=5)
        old.closed = True  # its pipes are broken: nothing to close politely
        self._slots[i] = self._start(i)

    def close(self) -> None:
        for slot in self._slots:
            if not getattr(slot, "closed", False):
                with contextlib.suppress(EOFError, BrokenPipeError, ConnectionError, OSError):
                    slot.close()


class RayPool(WorkerPool):
    """One Ray actor per child. Needs the `ray` extra.

    Args:
        env_fn: builds one env inside each actor.
        n: actors.
        num_cpus, num_gpus: resources of each actor.
        address: an existing Ray cluster ("auto", "ray://host:10001"); None starts a local Ray.
        threads: torch threads per actor (default: its num_cpus).
    """

    def __init__(self, env_fn: Callable[[], Any], n: int, num_cpus: float = 1, num_gpus: float = 0,
                 address: str | None = None, threads: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise MissingExtraError("ray", "ray", "--backend ray") from exc
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"num_cpus": max(int(num_cpus * n), 1)}))
        self._ray, self.n = ray, n
        threads = threads if threads is not None else max(1, int(num_cpus))
        self._actor_class = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_RayEnvActor)
        self._make = _threaded(env_fn, threads)
        self._actors = [self._actor_class.remote(self._make) for _ in range(n)]
        self._refs: dict[int, Any] = {}

    def submit(self, i: int, method: str, *args: Any, **kwargs: Any) -> None:
        self._refs[i] = self._actors[i].call.remote(method, *args, **kwargs)

    def result(self, i: int) -> Any:
        ref = self._refs.pop(i)
        try:
            return self._ray.get(ref)
        except (self._ray.exceptions.RayActorError, self._ray.exceptions.WorkerCrashedError) as exc:
            raise WorkerDied(f"Ray actor {i} was lost ({type(exc).__name__})") from None

    def restart(self, i: int) -> None:
        with contextlib.suppress(Exception):  # already gone
            self._ray.kill(self._actors[i])
        self._actors[i] = self._actor_class.remote(self._make)

    def actor(self, i: int) -> Any:
        return self._actors[i]

    def close(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):  # already gone
                self._ray.kill(actor)


class _RayEnvActor:
    """Holds one env inside a Ray actor and runs its methods."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.env = make()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method.startswith("."):
            return getattr(self.env, method[1:])
        return getattr(self.env, method)(*args, **kwargs)

    def pid(self) -> int:
        return os.getpid()


def env_factory(env: Any, device: str | None = None) -> Callable[[], Any]:
    """A picklable function that builds a copy of `env`: `gymnasium.make` of its spec (every
    registered policysearch env made with `gymnasium.make` has one), on `device` if given (its
    prepared data moved there)."""
    spec = getattr(env, "spec", None) or getattr(getattr(env, "unwrapped", None), "spec", None)
    if spec is None:
        raise ConfigError("workers > 1 need an env made with gymnasium.make(...) (its spec is how workers "
                          "build their copies), or pass env_fn=")
    import gymnasium as gym

    def make() -> Any:
        if device is None:
            return gym.make(spec).unwrapped
        kwargs = dict(spec.kwargs)
        if kwargs.get("data") is not None:
            kwargs["data"] = kwargs["data"].to(device)
        kwargs["device"] = device
        return gym.make(spec.id, **kwargs).unwrapped

    return make


def make_pool(env: Any, workers: int = 1, backend: str = "local", env_fn: Callable[[], Any] | None = None,
              threads: int | None = 1, ray_address: str | None = None, num_cpus: float = 1,
              num_gpus: float = 0, devices: list[str] | None = None, population: int | None = None) -> WorkerPool:
    """The pool a search runs its children in (see the module docstring). `devices` spreads the
    local workers over devices round-robin (``["cuda:0", "cuda:1"]`` on a two-GPU host).
    `population`: children held at once when it differs from `workers` (only with one local
    worker: a `SerialPool` of that many copies)."""
    from policysearch.checks import check_choice, check_int

    check_int("workers", workers, 1)
    check_choice("backend", backend, BACKENDS)
    if devices:
        from policysearch.device import resolve_device

        devices = [str(resolve_device(d)) for d in devices]  # unknown or absent devices fail here
    if population is not None and population != workers:
        check_int("population", population, 1)
        if workers != 1 or backend != "local" or devices:
            raise ConfigError(f"population is {population} with {workers} {backend} workers: either one member "
                              f"per worker (population = workers) or all members in this process (workers = 1)")
        return SerialPool(env_fn or env_factory(env), population)
    if backend == "local" and workers == 1 and not devices:
        return InProcessPool(env)
    if backend == "ray":
        return RayPool(env_fn or env_factory(env), workers, num_cpus=num_cpus, num_gpus=num_gpus,
                       address=ray_address, threads=threads)
    if devices and env_fn is None:
        return ProcessPool([env_factory(env, devices[i % len(devices)]) for i in range(workers)], workers, threads)
    return ProcessPool(env_fn or env_factory(env), workers, threads=threads)
