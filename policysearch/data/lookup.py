"""Finding a named data set: the folders searched (in order), the download into the user cache when
nothing is found, :func:`load_dataset`, and :func:`dataset_status` (the same search, no loading).

The search order is described in the :mod:`policysearch.data` docstring; what differs between data
sets (sub-folder names, which files make a complete set, what to download) comes from their
:class:`~policysearch.data.sources.Source` record.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

from policysearch.data.download import DownloadFailed, extract_folder, fetch
from policysearch.data.raw import RawDataset
from policysearch.data.sources import SOURCES, Source
from policysearch.errors import ConfigError, DatasetNotFoundError, UnknownNameError

__all__ = ["cache_dir", "dataset_status", "find_folder", "get_source", "load_dataset"]

# System-wide install locations (Debian's dataset-* packages); a module constant so tests can
# point it elsewhere.
_SYSTEM_ROOT = Path("/usr/share/datasets")


def get_source(name: str) -> Source:
    """The record of a named data set (``name`` case-insensitive, surrounding spaces ignored).

    Raises:
        UnknownNameError: ``name`` is not a known data set (the message suggests close names).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in SOURCES:
        raise UnknownNameError("dataset", str(name), SOURCES)
    return SOURCES[key]


def cache_dir(name: str) -> Path:
    """The user cache folder of a data set: ``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/policysearch/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "policysearch" / name


def _search_roots(source: Source, data_dir: str | Path | None) -> list[tuple[Path, tuple[str, ...]]]:
    """Folders to search, in order, each with the sub-folder names tried under it."""
    subs = source.subdirs
    roots: list[tuple[Path, tuple[str, ...]]] = []
    if data_dir is not None and str(data_dir) != "":
        roots.append((Path(data_dir).expanduser(), subs))
    env = os.environ.get("POLICYSEARCH_DATA")
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():  # a typo there would otherwise send every lookup elsewhere, silently
            what = "a file" if root.exists() else "no such folder"
            raise ConfigError(f"POLICYSEARCH_DATA is {env!r}: {what}, expected the folder holding your data sets; "
                              "fix it or unset it")
        roots.append((root, subs))
    # The cache and system folders are ours / the distribution's: only the layouts we write
    # need trying in the cache.
    roots.append((cache_dir(source.name), source.cache_subdirs))
    roots.append((_SYSTEM_ROOT / source.name, subs))
    seen: set[Path] = set()
    unique = []
    for root, sub in roots:
        if root not in seen:
            seen.add(root)
            unique.append((root, sub))
    return unique


def find_folder(source: Source, data_dir: str | Path | None, only_data_dir: bool = False) -> Path | None:
    """The first searched folder holding a complete set of ``source``'s files, or None.

    With ``only_data_dir`` an explicit ``data_dir`` is the only place searched: loading takes the
    user's folder at its word, so an incomplete one is an error, never a silent fall-back to
    another copy of the data (``dataset_status`` still searches everywhere).
    """
    assert source.complete is not None, f"{source.name} is bundled: it has no files to find"
    roots = _search_roots(source, data_dir)
    if only_data_dir and data_dir is not None and str(data_dir) != "":
        roots = roots[:1]
    for root, subs in roots:
        for folder in (root, *(root / s for s in subs)):
            if source.complete(folder):
                return folder
    return None


def _incomplete_message(source: Source, data_dir: str | Path) -> str:
    root, subs = _search_roots(source, data_dir)[0]
    expected = [name for name, _ in source.files] if source.archive_folder is None else [source.archive_folder + "/"]
    if not root.is_dir():
        detail = "the folder does not exist"
    else:
        present = {p.name for folder in (root, *(root / s for s in subs)) if folder.is_dir() for p in folder.iterdir()}
        missing = [e for e in expected if e.rstrip("/") not in present]
        detail = (f"missing {', '.join(missing)}" if missing else "its files are not a valid set")
    return "\n".join([f"data set {source.name!r} not found in --data-dir {root}: {detail} "
                      "(no other copy is used in its place)",
                      source.fill(source.how_to_get, system=_SYSTEM_ROOT / source.name)])


def _download(source: Source, folder: Path) -> Path:
    """Fetch ``source``'s files into ``folder`` (skipping those present); the folder holding the set."""
    for name, md5 in source.files:
        if not (folder / name).is_file():
            fetch(source.url + name, folder / name, md5)
    if source.archive_folder is None:
        return folder
    archive = folder / source.files[0][0]
    extracted = extract_folder(archive, folder, source.archive_folder)
    if source.complete is not None and not source.complete(extracted):
        raise DownloadFailed(f"{archive} does not hold the expected {source.archive_folder}/ files")
    return extracted


def _find_or_download(source: Source, data_dir: str | Path | None, download: bool) -> Path:
    folder = find_folder(source, data_dir, only_data_dir=True)
    if folder is not None:
        return folder
    if data_dir is not None and str(data_dir) != "":
        raise DatasetNotFoundError(_incomplete_message(source, data_dir))
    failure = "download=False, so nothing was downloaded"
    if download and source.files:
        try:
            return _download(source, cache_dir(source.name))
        except DownloadFailed as exc:
            failure = str(exc)
    raise DatasetNotFoundError(_not_found_message(source, data_dir, failure))


def _not_found_message(source: Source, data_dir: str | Path | None, failure: str) -> str:
    lines = [f"data set {source.name!r} not found. Searched:"]
    for root, subs in _search_roots(source, data_dir):
        state = " (no complete set of files)" if root.is_dir() else " (does not exist)"
        also = f" (and sub-folders {', '.join(s + '/' for s in subs)})" if subs else ""
        lines.append(f"  - {root}{also}{state}")
    lines.append(f"Download: {failure}.")
    lines.append(source.fill(source.how_to_get, system=_SYSTEM_ROOT / source.name))
    return "\n".join(lines)


def load_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True
) -> RawDataset:
    """Load a named data set into memory (CPU, uint8).

    Args:
        name: One of :data:`~policysearch.data.DATASETS` (case-insensitive).
        data_dir: Folder searched first for the files (see the :mod:`policysearch.data` docstring
            for the full search order). Ignored for ``digits``, which ships with scikit-learn. A set
            built from another (``fashion-scenes``: from ``fashion-mnist``) is looked for as that one.
        download: Fetch missing files from the official mirror into the user cache.

    Returns:
        The data set, with its official test split (a fixed carved one for ``digits``).

    Raises:
        UnknownNameError: ``name`` is not in :data:`~policysearch.data.DATASETS` (the message
            suggests close names).
        DatasetNotFoundError: The files are in none of the searched folders and could not be
            downloaded; the message lists the folders and how to get the files.
        ConfigError: A data file is present but damaged (the message names it).
    """
    source = get_source(name)
    if source.bundled:
        return source.read(None)
    try:
        folder = _find_or_download(_files_of(source), data_dir, download)
    except DatasetNotFoundError as exc:
        if not source.base:
            raise
        raise DatasetNotFoundError(f"data set {source.name!r} is built from {source.base!r}, whose files are "
                                   f"needed: {exc}") from None
    return source.read(folder)


def _files_of(source: Source) -> Source:
    """The record whose files `source` is read from: its base's for a set built from another."""
    return SOURCES[source.base] if source.base else source


def _status(source: Source, data_dir: str | Path | None) -> dict[str, Any]:
    c, h, w = source.shape
    row: dict[str, Any] = dict(
        name=source.name, task=source.task, available=False, location=None, images="{}+{}".format(*source.images),
        shape=f"{c}x{h}x{w}", classes=len(source.classes),
    )
    if source.bundled:
        try:
            counts = source.count(None) if source.count else source.images
        except ImportError as exc:
            return {**row, "note": f"{source.bundled} is not importable: {exc}"}
        return {**row, "available": True, "location": source.bundled, "images": "{}+{}".format(*counts),
                "note": source.found_note}
    files = _files_of(source)
    folder = find_folder(files, data_dir)
    if folder is None:
        note = files.fill(files.missing_note, cache=cache_dir(files.name))
        return {**row, "note": f"built from {files.name}, which is {note}" if source.base else note}
    row.update(available=True, location=str(folder), note=source.found_note)
    if source.count is not None:
        try:
            row["images"] = "{}+{}".format(*source.count(folder))
        except (OSError, EOFError, zlib.error, ConfigError) as exc:
            row.update(available=False, note=f"files present but unreadable: {exc}")
    return row


def dataset_status(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Report, without loading or downloading, which named data sets are usable here.

    Args:
        data_dir: Folder searched first, as in :func:`load_dataset`.

    Returns:
        One dict per name in :data:`~policysearch.data.DATASETS`, in that order, with keys
        ``name``, ``task``, ``available`` (bool), ``location`` (folder, ``"scikit-learn"`` or None),
        ``images`` (``"train+test"`` counts), ``shape`` (``"CxHxW"``), ``classes`` (int) and
        ``note``.
    """
    return [_status(source, data_dir) for source in SOURCES.values()]
