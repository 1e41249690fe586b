"""Where child trainings run: in this process, in worker processes, or in Ray actors.

A pool holds N copies of a search env, one per worker, and runs a method on several of them at
once: `submit(i, method, *args)` for each, then `result(i)` for each. The search driver
(`policysearch.search.driver.SearchVecEnv`) builds the vectorised env every controller drives on top of a
pool, so the controllers do not know which backend runs the children.

- `InProcessPool`: N = 1, the env itself, no copy (the default).
- `SerialPool`: N copies of the env in this process, run one after another: a population (`pbt`)
  larger than the machine has cores, or children too small to pay for worker processes.
- `ProcessPool`: one stable-baselines3 `SubprocVecEnv` worker process per child (SB3's worker loop,
  not a home-made one), one torch thread each unless told otherwise.
- `SharedProcessPool`: a population (`pbt`) larger than the worker processes: member i lives in
  process i % W, next to the other members of that process, which take turns in it.
- `RayPool`: one Ray actor per child, with its own `num_cpus` / `num_gpus` (the `ray` extra), on a
  local Ray or an existing cluster (`address`).

A worker that dies (killed, out of memory, segfault; a lost actor) raises `WorkerDied` from
`result`; `restart(i)` gives slot i a fresh worker, into which the driver restores the child's
last state and retries it once.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

import gymnasium

from policysearch.checks import check_choice, check_int
from policysearch.device import resolve_device
from policysearch.errors import ConfigError, MissingExtraError
from policysearch.search.shipping import check_crosses, env_factory

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


def _worker_process(env_fn: Callable[[], Any], threads: int | None) -> Callable[[], Any]:
    """`env_fn` for a worker process we own, which leaves SIGINT and SIGTERM to the driver.

    A terminal's Ctrl-C, or `timeout` / a job scheduler signalling the whole process group, reaches
    the workers too; the driver answers with a clean stop after the current step, and the workers must
    live to finish that step (a killed worker loses its child, which the driver would then retry).
    A worker whose driver is gone ends at its next message (the pipe is closed), and `close` kills
    the workers still busy with a call, which they would otherwise finish before ending."""
    make = _threaded(env_fn, threads)

    def ignore_stop_signals_then_make() -> Any:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        return make()
    return ignore_stop_signals_then_make


class ProcessPool(WorkerPool):
    """One SB3 `SubprocVecEnv` worker process per child.

    Args:
        env_fn: builds one env (pickled to each worker with cloudpickle), or one function per worker.
        n: workers.
        threads: torch threads per worker (1: the right setting for N processes on N cores).
    """

    def __init__(self, env_fn: Callable[[], Any] | list[Callable[[], Any]], n: int, threads: int | None = 1) -> None:
        fns = env_fn if isinstance(env_fn, list) else [env_fn] * n
        self.n, self._makes = n, [_worker_process(fn, threads) for fn in fns]
        self._slots = [self._start(i) for i in range(n)]
        self._busy: set[int] = set()  # slots with a call submitted and its result not yet read

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
            self._busy.add(i)
        except (BrokenPipeError, ConnectionError, OSError) as exc:
            self._dead = getattr(self, "_dead", {})
            self._dead[i] = exc

    def result(self, i: int) -> Any:
        dead = getattr(self, "_dead", {}).pop(i, None)
        if dead is not None:
            raise WorkerDied(f"worker {i} is gone ({type(dead).__name__})")
        try:
            value = self._slots[i].remotes[0].recv()
        except (EOFError, ConnectionError, OSError) as exc:
            self._busy.discard(i)
            code = self._slots[i].processes[0].exitcode
            raise WorkerDied(f"worker {i} died (exit code {code}, {type(exc).__name__})") from None
        self._busy.discard(i)  # only now: interrupted while waiting, the worker still owes its reply
        return value

    def restart(self, i: int) -> None:
        _kill(self._slots[i])
        self._busy.discard(i)
        self._slots[i] = self._start(i)

    def close(self) -> None:
        for i, slot in enumerate(self._slots):
            _close(slot, busy=i in self._busy)


class _Members(gymnasium.Env):
    """Several envs in one worker process, called by index through SB3's worker loop (which wants a
    gymnasium Env: the spaces are the members' own)."""

    def __init__(self, makes: list[Callable[[], Any]]) -> None:
        self._makes = makes
        self.envs = [make() for make in makes]
        self.observation_space, self.action_space = self.envs[0].observation_space, self.envs[0].action_space

    def member_call(self, j: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if method.startswith("."):
            return getattr(self.envs[j], method[1:])
        return getattr(self.envs[j], method)(*args, **kwargs)

    def member_restart(self, j: int) -> None:
        self.envs[j] = self._makes[j]()


class SharedProcessPool(WorkerPool):
    """N members over W < N worker processes (SB3 `SubprocVecEnv` workers, as `ProcessPool`): member
    i is env i // W of process i % W. Calls to members of one process run one after another, in the
    order they were submitted; their results are read back in that order and kept until asked for.

    A process that dies takes all its members with it: the member whose call found it dead is
    restarted with a fresh process, and every other member of that process raises `WorkerDied` at
    its next call, so that the driver restores each one from its last state as it would any child.

    Args:
        env_fns: one function per process, building one member (pickled to it with cloudpickle).
        n: members.
        threads: torch threads per process.
    """

    def __init__(self, env_fns: list[Callable[[], Any]], n: int, threads: int | None = 1) -> None:
        if not 1 < len(env_fns) < n:
            raise ConfigError(f"a shared pool holds more members ({n}) than worker processes ({len(env_fns)}) "
                              f"and at least 2 processes")
        self.n, self.w, self._threads = n, len(env_fns), threads
        self._fns = env_fns
        self._pending: list[collections.deque[int]] = [collections.deque() for _ in range(self.w)]
        self._ready: dict[int, Any] = {}
        self._dead: set[int] = set()  # processes found dead since their last start
        self._stale: set[int] = set()  # members whose process was restarted under them
        self._procs = [self._start(p) for p in range(self.w)]

    def _start(self, p: int) -> Any:
        from stable_baselines3.common.vec_env import SubprocVecEnv

        members = [self._fns[p]] * len(range(p, self.n, self.w))
        return SubprocVecEnv([_worker_process(functools.partial(_Members, members), self._threads)])

    def pid(self, i: int) -> int:
        """The process id of the worker holding member `i` (for tests and monitoring)."""
        return int(self._procs[i % self.w].processes[0].pid)

    def _died(self, p: int) -> None:
        self._dead.add(p)
        while self._pending[p]:
            self._ready[self._pending[p].popleft()] = WorkerDied(f"worker process {p} died "
                                                                 f"(exit code {self._procs[p].processes[0].exitcode})")

    def submit(self, i: int, method: str, *args: Any, **kwargs: Any) -> None:
        p, j = i % self.w, i // self.w
        if p in self._dead or i in self._stale:
            self._ready[i] = WorkerDied(f"member {i}: its worker process {p} was lost")
            return
        try:
            self._procs[p].remotes[0].send(("env_method", ("member_call", (j, method, args, kwargs), {})))
            self._pending[p].append(i)
        except (BrokenPipeError, ConnectionError, OSError):
            self._died(p)
            self._ready[i] = WorkerDied(f"worker process {p} is gone")

    def result(self, i: int) -> Any:
        p = i % self.w
        while i not in self._ready:
            if not self._pending[p]:
                raise RuntimeError(f"member {i}: result() without submit()")
            try:
                value = self._procs[p].remotes[0].recv()
            except (EOFError, ConnectionError, OSError):
                self._died(p)
                continue
            self._ready[self._pending[p].popleft()] = value
        value = self._ready.pop(i)
        if isinstance(value, WorkerDied):
            raise value
        return value

    def restart(self, i: int) -> None:
        p, j = i % self.w, i // self.w
        if p in self._dead:  # a fresh process: every other member of it lost its state too
            _kill(self._procs[p])
            self._procs[p] = self._start(p)
            self._dead.discard(p)
            self._stale.update(k for k in range(p, self.n, self.w) if k != i)
            self._stale.discard(i)
        else:  # the process lives: only this member is rebuilt, in its turn among the process's calls
            self._stale.discard(i)
            try:
                self._procs[p].remotes[0].send(("env_method", ("member_restart", (j,), {})))
                self._pending[p].append(i)
            except (BrokenPipeError, ConnectionError, OSError):
                self._died(p)
                self._ready[i] = WorkerDied(f"worker process {p} is gone")
            self.result(i)

    def close(self) -> None:
        for p, proc in enumerate(self._procs):
            _close(proc, busy=bool(self._pending[p]))


def _kill(vec_env: Any) -> None:
    """Kill a SubprocVecEnv's worker (dead, or busy with a call nobody will read) and mark it closed:
    its pipes are broken or owed a reply, so there is nothing to close politely."""
    for process in vec_env.processes:
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
    vec_env.closed = True


def _close(vec_env: Any, busy: bool) -> None:
    """Close a worker: politely when idle; killed when busy (a stop at once, or an error, while it
    trains a child: it ignores SIGINT / SIGTERM and would finish the child before reading "close")."""
    if getattr(vec_env, "closed", False):
        return
    if busy:
        _kill(vec_env)
        return
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionError, OSError):
        vec_env.close()


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


def make_pool(env: Any, workers: int = 1, backend: str = "local", env_fn: Callable[[], Any] | None = None,
              threads: int | None = 1, ray_address: str | None = None, num_cpus: float = 1,
              num_gpus: float = 0, devices: list[str] | None = None, population: int | None = None) -> WorkerPool:
    """The pool a search runs its children in (see the module docstring). `devices` spreads the
    local workers over devices round-robin (``["cuda:0", "cuda:1"]`` on a two-GPU host).
    `population`: children held at once when it differs from `workers` (more than the local
    workers: a `SerialPool` of that many copies with one worker, else a `SharedProcessPool`)."""

    check_int("workers", workers, 1)
    check_choice("backend", backend, BACKENDS)
    if devices:
        devices = [str(resolve_device(d)) for d in devices]  # unknown or absent devices fail here
    if population is not None and population != workers:
        check_int("population", population, 1)
        if population < workers or backend != "local":
            raise ConfigError(f"population is {population} with {workers} {backend} workers: one member per "
                              f"worker (population = workers), or more members than local workers, which "
                              f"take turns in them")
        if devices and env_fn is None:
            fns = [env_factory(env, devices[p % len(devices)]) for p in range(workers)]
        else:
            fns = [env_fn or env_factory(env)] * workers
        return SerialPool(fns[0], population) if workers == 1 else SharedProcessPool(fns, population, threads)
    if backend == "local" and workers == 1 and not devices:
        return InProcessPool(env)
    if backend == "ray":
        return RayPool(check_crosses(env_fn or env_factory(env), backend), workers, num_cpus=num_cpus,
                       num_gpus=num_gpus, address=ray_address, threads=threads)
    if devices and env_fn is None:
        fns = [check_crosses(env_factory(env, devices[i % len(devices)]), backend) for i in range(workers)]
        return ProcessPool(fns, workers, threads)
    return ProcessPool(check_crosses(env_fn or env_factory(env), backend), workers, threads=threads)
