"""Every file policysearch writes, written so that nothing is lost; every output path checked early.

- A write goes to a temporary file in the target's folder, is flushed and fsynced, then renamed
  over the target (``os.replace`` is atomic on POSIX and Windows). A crash, a full disk or a kill
  leaves either the old file or the new one, never a truncated mix; the folder is fsynced too,
  so the rename itself survives a power cut.
- Append-only logs (``episodes.jsonl``) write one whole line per ``write`` call, then fsync.
  Their reader skips a torn last line (a kill in the middle of an append) and reports it; a bad
  line anywhere else is an error, since that is damage, not an interrupted append.
- JSON on disk is strict: NaN and infinities are written as ``null`` (``allow_nan=False``), as
  browsers, ``jq`` and most JSON libraries reject them.
- Output paths (``--save``, ``--out``) are checked before any training starts, so a bad path
  costs a second, not a training run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from policysearch.errors import ConfigError, PolicyFormatError

__all__ = [
    "append_line",
    "atomic_path",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "json_dumps",
    "json_safe",
    "read_jsonl",
    "write_json",
]


def json_safe(obj: Any) -> Any:
    """A copy of `obj` in which NaN / inf floats are None and tuples are lists (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return json_safe(obj.item())
    return obj


def json_dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of `obj` (NaN / inf as null); raises TypeError for non-JSON objects."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable; not every platform / file system lets a folder be opened.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mode_for(path: Path) -> int:
    """The permission bits `path` keeps when it is replaced, or a new file's under this process's umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(path.stat().st_mode)
    return 0o666 & ~_umask()


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it; done once, as processes rarely change it.
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a library that writes by file name (torch.save,
    SB3's ``save``, matplotlib's ``savefig``); on success it is fsynced and renamed onto `path`,
    on any error removed, leaving what was at `path` untouched. The temporary name keeps the
    suffix so that writers that choose a format by suffix behave the same."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); the result gets the mode a plain open() would give it.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a binary temporary file, then fsync and rename it onto `path`."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented, strict JSON (NaN / inf as null), atomically."""
    text = json_dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def append_line(path: str | Path, record: Any) -> None:
    """Append `record` as one strict-JSON line with a single write, then fsync, so a crash leaves
    at most a torn last line, which `read_jsonl` skips."""
    line = (json_dumps(record) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> tuple[list[Any], str | None]:
    """Read a JSON-lines file; return its records and, when its last line is torn (no newline
    and not valid JSON, as an interrupted append leaves it), a note saying so.

    Raises:
        PolicyFormatError: The file is missing, or a line other than the last is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyFormatError(f"{path}: no such file")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if number == len(lines):  # no newline after it: an append that never finished
                return records, f"{path}: skipped a torn last line {number} ({len(line)} bytes)"
            raise PolicyFormatError(f"{path}: line {number} is not valid JSON ({exc})") from exc
    return records, None


# ---------------------------------------------------------------------- early output checks
def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        try:
            if parent.exists():
                return parent
        except OSError:  # a name too long to stat is not there
            continue
    return Path(".")


def _check_path(path: Path, option: str) -> None:
    if not str(path).strip():
        raise ConfigError(f"{option} is empty, expected a path")
    ancestor = _existing_ancestor(path)
    name_max = _name_max(ancestor)
    for part in path.parts:
        if len(part.encode("utf-8", "surrogateescape")) > name_max:
            raise ConfigError(f"{option} is '{path}': the name '{part[:40]}...' is too long for this file system")
    if not ancestor.is_dir():
        raise ConfigError(f"{option} is '{path}': '{ancestor}' is a file, expected a folder there")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} is '{path}': the folder '{ancestor}' is not writable")


def check_output_file(path: str | Path, option: str = "output file") -> Path:
    """Check, before any work, that `path` can be written as a file; raise ConfigError naming
    `option` (e.g. "--save") otherwise. Creates nothing."""
    path = Path(path)
    _check_path(path, option)
    if path.is_dir():
        raise ConfigError(f"{option} is '{path}': a folder, expected a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} is '{path}': the file exists and is not writable")
    return path


def check_output_dir(path: str | Path, option: str = "output folder") -> Path:
    """Check, before any work, that `path` is or can become a writable folder; raise ConfigError
    naming `option` (e.g. "--out") otherwise. Creates nothing."""
    path = Path(path)
    _check_path(path, option)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} is '{path}': a file, expected a folder")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} is '{path}': the folder is not writable")
    return path
