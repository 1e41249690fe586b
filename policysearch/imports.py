"""User code named by a string: ``"package.module:attribute"`` or ``"path/to/file.py:attribute"``.

This is how a user points policysearch at their own model factory (``--model``) or data loader
(``--data module:function``): code they wrote and chose to run, never code read from a data or
artefact file. The module is looked up on the Python path, then in the current folder. A resolved
`ImportPath` is plain data (module name, attribute, file), so it pickles and imports again in a
worker process even where the module is not on that process's path.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policysearch.errors import ConfigError

__all__ = ["ImportPath", "first_line", "import_path"]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut at a word boundary after `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


@dataclass(frozen=True)
class ImportPath:
    """Where an attribute lives: module name, attribute (dotted), and the module's file if known.

    `what` names the value in messages (``"model 'mymodels:net'"``).
    """

    module: str
    attr: str
    origin: str | None
    what: str

    def load(self) -> Any:
        """The attribute (imports the module, from its file when it is not on the path).

        Raises:
            ConfigError: the module fails to import, or has no such attribute; says which and why.
        """
        module = sys.modules.get(self.module) or self._import()
        try:
            return functools.reduce(getattr, self.attr.split("."), module)
        except AttributeError:
            raise ConfigError(f"{self.what}: {self.origin or self.module} has no {self.attr!r}") from None

    def _import(self) -> Any:
        try:
            if _find_spec(self.module) is not None:
                return importlib.import_module(self.module)
            if self.origin is None:
                raise ImportError(f"no module named {self.module!r}")
            spec = importlib.util.spec_from_file_location(self.module, self.origin)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {self.origin}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[self.module] = module
            spec.loader.exec_module(module)
            return module
        except ConfigError:
            raise
        except Exception as exc:  # the user's module failed to import: say which and why, in one line
            sys.modules.pop(self.module, None)
            raise ConfigError(f"{self.what}: importing {self.origin or self.module} failed: "
                              f"{type(exc).__name__}: {first_line(exc)}") from None


def import_path(where: str, attr: str, what: str) -> ImportPath:
    """Resolve ``where:attr`` (a module name or a ``.py`` file) and check now that it imports and is callable.

    Raises:
        ConfigError: no such module or file, an import error inside it, no such attribute, or not callable.
    """
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{what}: no such file {str(path)!r}")
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        found = ImportPath(f"policysearch_user_{path.stem}_{digest}", attr, str(path), what)
    else:
        spec = _find_spec(where)
        if spec is None:
            raise ConfigError(f"{what}: no module {where!r} on the Python path or in the current folder "
                              f"{os.getcwd()!r}")
        found = ImportPath(where, attr, spec.origin, what)
    target = found.load()  # a typo fails now, before any data is loaded
    if not callable(target):
        raise ConfigError(f"{what}: {attr!r} is a {type(target).__name__}, expected a function")
    return found


def _find_spec(module: str) -> Any:
    """The import spec of `module`, looking in the current folder too (where a user keeps their code)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
    return spec
