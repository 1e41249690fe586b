"""Typed exceptions: every message says what was given, what was expected, and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PolicySearchError(Exception):
    """Base class of every error policysearch raises on purpose.

    `exit_code` is the command line's exit status for it: 2 (bad input) unless a subclass says otherwise.
    """

    exit_code = 2


class ConfigError(PolicySearchError, ValueError):
    """A value given by the user is out of range or inconsistent."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The suffix " Did you mean 'x' or 'y'?" for the known names close to `name`; "" when none is."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class UnknownNameError(ConfigError):
    """A name (dataset, model, op, policy, controller, ...) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}.{did_you_mean(name, known)} Known: {', '.join(known)}.")


class DatasetNotFoundError(PolicySearchError, FileNotFoundError):
    """A data set's files are neither on disk nor downloadable."""


class PolicyFormatError(PolicySearchError, ValueError):
    """A policy / schedule / plan file is malformed; the message names the field."""


class PolicyInputError(PolicySearchError, ValueError):
    """An artefact (a policy, schedule or plan) was handed a batch, label or value it cannot take; the
    message names the form it expects."""


class FileWriteError(PolicySearchError, OSError):
    """A file could not be written (a full disk, no permission); what was there before is left whole."""


class SearchInterrupted(PolicySearchError):
    """A search stopped by SIGINT / SIGTERM before it had anything to export; the run folder resumes."""

    exit_code = 130


class DivergenceError(PolicySearchError, FloatingPointError):
    """A child training produced a NaN or infinite loss."""


class MissingExtraError(PolicySearchError, ImportError):
    """An optional dependency is needed: install the named extra."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {module!r}: "
            f"pip install 'policysearch[{extra}]'"
        )
