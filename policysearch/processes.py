"""Plain function calls in worker processes, results in the order asked.

Used where whole trainings are independent (a comparison's seeds, a re-ranking's distillations):
no env, no state to move, so a process pool of fresh interpreters is all it takes. The children of a
search run on `policysearch.search.workers` instead, which keeps envs alive between steps.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from policysearch.errors import ConfigError

__all__ = ["in_processes"]


def in_processes(fn: Any, args: list[tuple[Any, ...]], workers: int, threads: int | None = 1,
                 progress: bool = False, desc: str = "evaluate",
                 setup: tuple[Callable[..., Any], tuple[Any, ...]] | None = None,
                 on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Run `fn` (a module-level function) on each argument tuple in `workers` spawned processes (one
    torch thread each by default); results come back in the order of `args`, so tables do not depend
    on timing. With one worker the calls run here, in order, at the caller's thread count.

    `setup` is ``(function, args)`` each process calls first (e.g. `policysearch.models.restore_models`
    with the models only this process knows); it must pickle, else a ConfigError says why, before any work.
    `on_result(i, result)` is called here as each result lands (in finishing order), e.g. to save it at once.
    """
    if workers == 1:
        results = []
        for i, a in enumerate(args):
            results.append(fn(*a))
            if on_result is not None:
                on_result(i, results[-1])
        return results
    if setup is not None:
        try:
            pickle.dumps(setup)
        except Exception as exc:
            raise ConfigError(f"{desc}: what worker processes need cannot be sent to them ({type(exc).__name__}: "
                              f"{exc}); define factories at module level, or use one worker") from None
    import concurrent.futures
    import multiprocessing

    from tqdm.auto import tqdm

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked OpenMP state
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                                                initargs=(threads, setup)) as pool:
        futures = [pool.submit(fn, *a) for a in args]
        index = {f: i for i, f in enumerate(futures)}
        with tqdm(total=len(futures), disable=not progress, unit="run", desc=desc) as bar:
            for future in concurrent.futures.as_completed(futures):
                if on_result is not None:
                    on_result(index[future], future.result())
                bar.update(1)
        return [f.result() for f in futures]


def _start(threads: int | None, setup: tuple[Callable[..., Any], tuple[Any, ...]] | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if setup is not None:
        setup[0](*setup[1])
