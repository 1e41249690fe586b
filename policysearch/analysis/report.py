"""Readable results: aligned text tables for the terminal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from policysearch.checks import is_number
from policysearch.files import write_json


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a Markdown-compatible aligned table (numbers right-aligned)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    numeric = [all(is_number(row.get(col)) for row in rows) for col in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(columns), sep, *(line(r) for r in cells)])


def finish_record(record: dict[str, Any], out: str | None, started: tuple[float, float], command: str) -> None:
    """A benchmark's end: add its run time (wall and CPU minutes since ``started``, a
    ``(perf_counter(), process_time())`` pair), the torch build and CPU kernels (seeded CPU training
    reproduces bit for bit only on the same ones) and its command; write it to ``out`` (if given)
    and print it as ONE JSON line on stdout."""
    import json
    import platform
    import time
    from pathlib import Path

    import torch


    record.update(environment={"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                               "python": platform.python_version()},
                  wall_minutes=round((time.perf_counter() - started[0]) / 60, 2),
                  cpu_minutes=round((time.process_time() - started[1]) / 60, 2), command=command)
    if out:
        write_json(Path(out), record)
    print(json.dumps(record))

