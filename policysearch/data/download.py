"""Generic downloading: fetch a URL to a file with its md5 checked, and unpack one folder of a tar
archive without letting the archive write anywhere else.

Nothing here knows a data set; :mod:`policysearch.data.lookup` says what to fetch and where. Every
failure is a :class:`DownloadFailed` whose message says why, which the caller folds into its
"data set not found" error; without network that happens within seconds (:data:`NET_TIMEOUT`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from policysearch.files import atomic_write

__all__ = ["NET_TIMEOUT", "DownloadFailed", "extract_folder", "fetch"]

log = logging.getLogger(__name__)

# Socket timeout for downloads (connect and each read), in seconds. Name resolution is not
# covered by socket timeouts, so it is bounded separately in `_resolve_host`.
NET_TIMEOUT = 10.0


class DownloadFailed(Exception):
    """Internal: a download did not complete; the message says why."""


def _resolve_host(url: str) -> None:
    # socket timeouts do not cover DNS: on a closed network getaddrinfo can hang for tens of
    # seconds, so bound it with a daemon thread.
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, port)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(NET_TIMEOUT)
    if not outcome:
        raise DownloadFailed(f"resolving {host} took more than {NET_TIMEOUT:g} s")
    if outcome[0] is not None:
        raise DownloadFailed(f"cannot resolve {host}: {outcome[0]}")


def fetch(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` to ``dest``, checking its md5; ``dest`` appears only when complete.

    Raises:
        DownloadFailed: The host does not resolve, the transfer fails, or the md5 differs.
    """
    _resolve_host(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name: parallel workers may download at once, and os.replace
    # makes whichever finishes last win with an identical, verified file.
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    digest = hashlib.md5()
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=NET_TIMEOUT) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DownloadFailed(
                f"{url} has md5 {digest.hexdigest()}, expected {md5} (corrupt or changed upstream)"
            )
        os.replace(tmp, dest)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise DownloadFailed(f"fetching {url} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def extract_folder(archive: Path, dest: Path, folder: str) -> Path:
    """Extract the regular files directly under ``folder/`` in the tar ``archive`` to ``dest/folder``.

    Extraction goes member by member: only regular files under ``folder/``, written by name, so a
    crafted archive cannot place files elsewhere (no links, no ``..``, no absolute paths).

    Returns:
        ``dest / folder``.

    Raises:
        DownloadFailed: The archive is damaged or not a tar file.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 2 or parts[0] != folder:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src:  # written whole or not at all: a kill never leaves a truncated batch file
                    atomic_write(dest / folder / parts[1], lambda out, src=src: shutil.copyfileobj(src, out))
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DownloadFailed(f"extracting {archive} failed: {exc}") from exc
    return dest / folder
