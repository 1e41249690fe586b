"""Every file policysearch writes, written so that nothing is lost; every output path checked early.

- A write goes to a temporary file in the target's folder, is flushed and fsynced, then renamed
  over the target (``os.replace`` is atomic on POSIX and Windows). A crash, a full disk or a kill
  leaves either the old file or the new one, never a truncated mix; the folder is fsynced too,
  so the rename itself survives a power cut.
- Append-only logs (``episodes.jsonl``) write one whole line per ``write`` call, then fsync; an
  append that fails (a full disk) is cut back off. Their reader skips a torn last line (a kill in
  the middle of an append) and reports it; a bad line anywhere else is an error, since that is
  damage, not an interrupted append. `repair_jsonl` drops a torn line by rewriting the file
  atomically, so a kill during the repair leaves every whole line.
- A write that fails for want of space or permission raises `FileWriteError` (one line, exit 2),
  and leaves the old file whole.
- Files in a run folder are opened without following symbolic links (``O_NOFOLLOW``) and must be
  plain files (`open_regular`, `check_regular`): a link planted there never redirects a write.
- JSON on disk is strict: NaN and infinities are written as ``null`` (``allow_nan=False``), as
  browsers, ``jq`` and most JSON libraries reject them. JSON is read by one reader (`parse_json`,
  `read_json`) that refuses NaN, infinities, numbers out of a float's range, duplicate keys,
  nesting deeper than `MAX_JSON_DEPTH` and files larger than `MAX_JSON_BYTES`.
- Output paths (``--save``, ``--out``) are checked before any training starts, so a bad path
  costs a second, not a training run.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from policysearch.errors import ConfigError, FileWriteError, PolicyFormatError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "append_line",
    "atomic_path",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "check_regular",
    "json_dumps",
    "json_safe",
    "open_regular",
    "parse_json",
    "read_json",
    "read_jsonl",
    "remove_stale_temporaries",
    "repair_jsonl",
    "write_json",
]

#: Deepest nesting of arrays and objects any file may hold (policysearch's own files stay under 10):
#: deeper input is refused before it is parsed, so it can never exhaust the interpreter's stack.
MAX_JSON_DEPTH = 64
#: Largest JSON file (or JSON-lines line) read: policysearch's own are kilobytes.
MAX_JSON_BYTES = 64 * 2**20


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


def json_dumps(obj: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of `obj` (NaN / inf as null); raises TypeError for non-JSON objects."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False, sort_keys=sort_keys)


# ---------------------------------------------------------------------- reading JSON
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


class _Refused(ValueError):
    """A value JSON allows but policysearch does not: raised inside the decoder, reported with the source."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"holds {name}, which is not valid JSON (write a finite number or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"holds the number {text[:40]}, beyond the range of a float (at most about 1.8e308)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"holds the key {key[:60]!r} twice in one object (which one is meant?)")
            seen.add(key)
    return obj


def parse_json(text: str | bytes, source: str, strict_numbers: bool = True) -> Any:
    """Decode strict JSON: NaN / Infinity, numbers beyond a float's range, a key twice in one
    object and nesting deeper than `MAX_JSON_DEPTH` are refused, each as a PolicyFormatError that
    names `source` (what every loader of policysearch reads files with). ``strict_numbers=False``
    lets NaN / Infinity through, for another library's format (an SB3 zip's ``data``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyFormatError(f"{source}: not a text (UTF-8) file: byte {exc.start} cannot be decoded") from None
    if len(text) > MAX_JSON_BYTES:
        raise PolicyFormatError(f"{source}: {len(text):,} characters of JSON, expected at most {MAX_JSON_BYTES:,} "
                                "(policysearch's files are kilobytes)")
    if _too_deep(text):
        raise PolicyFormatError(f"{source}: nested more than {MAX_JSON_DEPTH} levels deep, "
                                "expected a policysearch file (a few levels)")
    try:
        if not strict_numbers:
            return json.loads(text, object_pairs_hook=_unique_keys)
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PolicyFormatError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
                                ) from None
    except (_Refused, RecursionError) as exc:
        raise PolicyFormatError(f"{source}: {exc}") from None
    except ValueError as exc:  # an integer of thousands of digits, and the like
        raise PolicyFormatError(f"{source}: not valid JSON ({str(exc)[:120]})") from None


def read_json(path: str | Path) -> Any:
    """Decode a JSON file with `parse_json`; a missing, oversized, binary, non-UTF-8 or malformed
    file raises PolicyFormatError naming it. Its size is checked before it is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size is None or not path.is_file():
        raise PolicyFormatError(f"{path}: no such file")
    if size > MAX_JSON_BYTES:
        raise PolicyFormatError(f"{path}: {size:,} bytes, expected a JSON file of at most {MAX_JSON_BYTES:,}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_json(raw, str(path))


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); the result gets the mode a plain open() would give it.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        converted = _write_error(path, exc) if isinstance(exc, (OSError, RuntimeError)) else None
        if converted is not None:
            raise converted from exc
        raise
    _fsync_dir(path.parent)


#: Why a write fails that a user can mend (space, quota, permission, a read-only file system).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.EIO}


def _write_error(path: Path, exc: BaseException) -> FileWriteError | None:
    """The one-line FileWriteError for a failed write of `path`, or None when `exc` is not one.
    torch.save reports a full disk as a RuntimeError ("... file write failed")."""
    if isinstance(exc, FileWriteError):
        return None
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        reason = exc.strerror or str(exc)
        hint = "; free some space and run the command again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    elif isinstance(exc, RuntimeError) and "write failed" in str(exc):
        reason, hint = "the write failed (is the disk full?)", ""
    else:
        return None
    error = FileWriteError(f"cannot write {path}: {reason} (nothing was half-written: what was there before is "
                           f"whole){hint}")
    error.errno = exc.errno if isinstance(exc, OSError) else None
    return error


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
    at most a torn last line, which `read_jsonl` skips. The file is opened without following a
    symbolic link; a write that fails (a full disk) is cut back off, so nothing half-written stays.

    Raises:
        ConfigError: `path` is a symbolic link or not a plain file.
        FileWriteError: The line could not be written.
    """
    path = Path(path)
    line = (json_dumps(record) + "\n").encode("utf-8")
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # the log as it was: no half line left behind
            converted = _write_error(path, exc)
            if converted is not None:
                raise converted from exc
            raise
    finally:
        os.close(fd)


def _split_lines(raw: bytes, path: Path) -> tuple[list[Any], str | None, int]:
    """The records of a JSON-lines file's bytes, a note on a torn last line, and the length of
    the whole lines (the bytes worth keeping)."""
    lines = raw.split(b"\n")
    records: list[Any] = []
    keep = 0
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)  # no newline after it: an append that may never have finished
        if line.strip():
            try:
                records.append(parse_json(line, f"{path}: line {number}"))
            except PolicyFormatError as exc:
                if last:
                    return records, f"{path}: skipped a torn last line {number} ({len(line)} bytes)", keep
                raise PolicyFormatError(str(exc)) from None
        keep += len(line) + (0 if last else 1)
    return records, None, keep


def read_jsonl(path: str | Path) -> tuple[list[Any], str | None]:
    """Read a JSON-lines file; return its records and, when its last line is torn (no newline
    and not valid JSON, as an interrupted append leaves it), a note saying so.

    Raises:
        PolicyFormatError: The file is missing, or a line other than the last is not JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise PolicyFormatError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    records, torn, _ = _split_lines(raw, path)
    return records, torn


def repair_jsonl(path: str | Path) -> tuple[list[Any], str | None]:
    """`read_jsonl`, then make the file safe to append to: a torn last line is dropped and a last
    line without its newline gets one, by an atomic rewrite (temporary file, fsync, rename), so a
    kill at any moment of the repair leaves every whole line that was there.

    Returns:
        The records and the note on a dropped torn line (None when there was none).
    """
    path = Path(path)
    fd = open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        raw = f.read()
    records, torn, keep = _split_lines(raw, path)
    fixed = raw[:keep]
    if fixed and not fixed.endswith(b"\n"):
        fixed += b"\n"
    if fixed != raw:
        atomic_write(path, lambda f: f.write(fixed))
    return records, torn


# ---------------------------------------------------------------------- files of a run folder
def _link_message(path: Path) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return (f"{path} is a symbolic link (to {target}); policysearch never reads or writes a run's file through "
            "a link: remove the link, or choose another folder")


def check_regular(path: str | Path) -> None:
    """Refuse `path` when it exists as anything but a plain file (a symbolic link, a folder, ...),
    without following it. Creates nothing.

    Raises:
        ConfigError: naming the file and what it is.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(_link_message(path))
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a plain file"
        raise ConfigError(f"{path} is {what}, expected a file policysearch writes: move it away, or choose "
                          "another folder")


def open_regular(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symbolic link at `path` and opens only a plain file.

    Raises:
        ConfigError: `path` is a link or not a plain file.
        FileWriteError: It cannot be created or opened (no space, no permission).
    """
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            check_regular(path)
        converted = _write_error(path, exc)
        if converted is not None:
            raise converted from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        check_regular(path)
        raise ConfigError(f"{path} is not a plain file")
    return fd


def remove_stale_temporaries(folder: str | Path, names: tuple[str, ...]) -> list[str]:
    """Remove the temporary files `atomic_path` leaves when a process is killed while writing one of
    `names` in `folder` (``.NAME.XXXX.tmpSUFFIX``); call it only while holding the folder's lock.
    Returns the names removed."""
    folder = Path(folder)
    removed = []
    for name in names:
        for tmp in folder.glob(f".{glob.escape(name)}.*.tmp{glob.escape(Path(name).suffix)}"):
            with contextlib.suppress(OSError):
                if not stat.S_ISDIR(os.lstat(tmp).st_mode):
                    tmp.unlink()
                    removed.append(tmp.name)
    return removed


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
    for part in (path, *path.parents):
        with contextlib.suppress(OSError):
            if part.is_symlink() and not part.exists():
                raise ConfigError(f"{option} is '{path}': '{part}' is a symbolic link to {os.readlink(part)!r}, "
                                  "which does not exist; create its target or give another path")
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
