"""The JSON envelope every exported artefact shares: ``kind``, ``format_version``, provenance.

Artefacts are plain JSON (never pickle) so that any training loop can read them without
policysearch's search code. Each artefact class defines ``KIND``, ``FORMAT_VERSION``,
``to_dict()`` and ``from_dict()``; this module adds the envelope, file I/O and typed errors.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from policysearch.checks import is_int
from policysearch.errors import PolicyFormatError
from policysearch.files import read_json, write_json  # read_json: every artefact's reader, kept importable here
from policysearch.policies.zoo import resolve_zoo


def provenance(**extra: Any) -> dict[str, Any]:
    """Versions of the libraries that produced an artefact, plus caller-given facts
    (env id, dataset fingerprint, seed, search budget, ...)."""
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "policysearch": version("policysearch"),
        "torch": version("torch"),
        "kornia": version("kornia"),
        "python": platform.python_version(),
    }
    info.update({k: v for k, v in extra.items() if v is not None})
    return info


def wrap(kind: str, format_version: int, body: dict[str, Any], prov: dict[str, Any] | None) -> dict[str, Any]:
    """Put ``body`` into the common envelope."""
    return {"kind": kind, "format_version": format_version, **body, "provenance": prov or {}}


def unwrap(data: Any, kind: str, format_version: int, source: str = "<dict>") -> dict[str, Any]:
    """Check the envelope of a decoded artefact and return it; raise PolicyFormatError naming the problem."""
    if not isinstance(data, dict):
        raise PolicyFormatError(f"{source}: expected a JSON object, got {type(data).__name__}")
    got_kind = data.get("kind")
    if got_kind != kind:
        raise PolicyFormatError(f"{source}: field 'kind' is {got_kind!r}, expected {kind!r}")
    version = data.get("format_version")
    if not is_int(version) or version < 1 or version > format_version:  # True is no version
        raise PolicyFormatError(
            f"{source}: field 'format_version' is {version!r}; this policysearch reads {kind} "
            f"versions 1..{format_version} (upgrade policysearch for newer files)"
        )
    return data


def require(data: dict[str, Any], field: str, types: type | tuple[type, ...], source: str) -> Any:
    """Return ``data[field]`` if present and of the expected type, else raise PolicyFormatError."""
    if field not in data:
        raise PolicyFormatError(f"{source}: missing field {field!r}")
    value = data[field]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = "/".join(t.__name__ for t in _as_tuple(types))
        raise PolicyFormatError(f"{source}: field {field!r} is {value!r}, expected {names}")
    return value


def read_provenance(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The optional ``provenance`` object of a decoded artefact ({} when absent or null)."""
    prov = data.get("provenance")
    if prov is None:
        return {}
    if not isinstance(prov, dict):
        raise PolicyFormatError(f"{source}: field 'provenance' is {prov!r}, expected an object")
    return prov


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


class JsonArtefact:
    """File I/O shared by the artefact classes: they define `to_dict()` and
    `from_dict(data, source)`, this adds `save(path)` and `load(path)` (exact round trip)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Any:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write the artefact as JSON; `type(self).load(path)` gives it back unchanged."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a file written by `save`, or a shipped one as ``zoo:NAME``; a missing, non-JSON or
        malformed file raises PolicyFormatError naming the problem."""
        return cls.from_dict(read_json(resolve_zoo(path, (cls.KIND,))), source=str(path))
