"""MkDocs hooks of the policysearch site (declared in docs/mkdocs.yml).

1. ``pymdownx.snippets`` reads ``--8<--`` includes from the repository root, wherever mkdocs runs
   (the Results page includes ``benchmarks/RESULTS.md``).
2. Links that leave the site's folder. A page may link any file of the repository with a plain
   relative link (so the same Markdown works when read on a code host), e.g.
   ``[the example](../../../examples/plain_pytorch_loop.py)`` or an image in ``docs/tracking/``; and
   the text a page includes between ``<!-- links-from: PATH -->`` and ``<!-- /links-from -->`` has
   links relative to PATH (the included file), not to the page. Before MkDocs checks the links,
   each such link is rewritten:

   * to a page of the site, when it points at one (``README.md`` is the home page,
     ``benchmarks/RESULTS.md`` the Results page);
   * to a copy of the file in the site, for any other file of the repository (not Markdown);
   * to plain text naming the path, for a folder or another Markdown file.

   A link to something that does not exist is left as it is, with a warning, so
   ``mkdocs build --strict`` fails on it.
3. Sphinx roles in docstrings (":func:`x`") are shown as plain code in the API pages.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path
from typing import Any

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.policysearch")

REPO = Path(__file__).resolve().parent.parent
SITE_PAGES = {"README.md": "index.md", "benchmarks/RESULTS.md": "results.md"}  # repository file -> page
BEGIN = re.compile(r"^\s*<!--\s*links-from:\s*(?P<path>\S+)\s*-->\s*$")
END = re.compile(r"^\s*<!--\s*/links-from\s*-->\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"(?P<head>!?\[(?:[^\[\]]|\[[^\]]*\])*\])\((?P<target><[^>]*>|[^()\s]+)(?P<title>\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^(?P<head>\s{0,3}\[[^\]]+\]:\s*)(?P<target>\S+)(?P<rest>.*)$")
ROLE = re.compile(r":(?:func|class|data|meth|mod|attr|exc|obj):<code>(?P<name>[^<]+)</code>")
HTML_ATTR = re.compile(r"(?P<head>\b(?:src|href)=\")(?P<target>[^\"]+)(?P<rest>\")")

_state: dict[str, Any] = {"docs_dir": None, "page": None}


def on_config(config: Any) -> Any:
    _state["docs_dir"] = Path(config["docs_dir"]).resolve()
    snippets = config["mdx_configs"].setdefault("pymdownx.snippets", {})
    snippets["base_path"] = [str(REPO)]
    config["markdown_extensions"].append(_LinksExtension())
    return config


def on_files(files: Files, config: Any) -> Files:
    """Copy into the site every repository file a page (or what it includes) links to."""
    docs_dir = _state["docs_dir"]
    wanted: set[str] = set()
    for file in files.documentation_pages():
        page_dir = Path(file.abs_src_path).parent
        for base, text in _regions(Path(file.abs_src_path).read_text(encoding="utf-8"), page_dir):
            for target in _targets(text):
                resolved = _resolve(base, target)
                if resolved is not None and _kind(resolved, docs_dir) == "copy":
                    wanted.add(resolved.relative_to(REPO).as_posix())
    present = {f.src_uri for f in files}
    for rel in sorted(wanted - present):
        files.append(File(rel, src_dir=str(REPO), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    _state["page"] = page.file.src_uri
    return markdown


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Some docstrings use Sphinx roles (":func:`x`", ":class:`~a.B`"), which Markdown shows as text:
    keep the code, drop the role (and, as Sphinx does for "~", the path before the last name)."""
    def role(m: re.Match[str]) -> str:
        name = m["name"]
        return f"<code>{name.rsplit('.', 1)[-1] if name.startswith('~') else name}</code>"

    return ROLE.sub(role, html)


def _regions(text: str, page_dir: Path) -> list[tuple[Path, str]]:
    """(base folder of the links, text) for the page's own text and each included file's text."""
    out = [(page_dir, text)]
    for line in text.splitlines():
        snippet = re.match(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$', line)
        if snippet and (REPO / snippet["path"]).is_file():
            path = REPO / snippet["path"]
            out.append((path.parent, path.read_text(encoding="utf-8")))
    return out


def _targets(text: str) -> list[str]:
    found, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        found += [m["target"].strip("<>") for m in INLINE.finditer(line)]
        found += [m["target"] for m in HTML_ATTR.finditer(line)]
        if m := REFERENCE.match(line):
            found.append(m["target"].strip("<>"))
    return found


def _resolve(base: Path, target: str) -> Path | None:
    """The repository path a relative link points at, or None (a URL, an anchor, outside the repository)."""
    if not target or target.startswith(("#", "/")) or re.match(r"^[a-zA-Z][\w+.-]*:", target):
        return None
    path = target.split("#", 1)[0].split("?", 1)[0]
    if not path:
        return None
    resolved = Path(os.path.normpath(base / path))
    try:
        resolved.relative_to(REPO)
    except ValueError:
        return None
    return resolved


def _kind(path: Path, docs_dir: Path) -> str:
    """How a link to this path is rewritten: keep, page, copy, text or missing."""
    if path.is_relative_to(docs_dir):
        return "keep"
    rel = path.relative_to(REPO).as_posix()
    if rel in SITE_PAGES:
        return "page"
    if not path.exists():
        return "missing"
    if path.is_dir() or path.suffix.lower() in (".md", ".markdown"):
        return "text"
    return "copy"


def _rewrite(target: str, base: Path) -> tuple[str | None, str | None]:
    """(new link target, or None to keep it; plain text to put instead of the link, or None)."""
    resolved = _resolve(base, target)
    if resolved is None:
        return None, None
    docs_dir = _state["docs_dir"]
    page_dir = posixpath.dirname(_state["page"] or "")
    anchor = "#" + target.split("#", 1)[1] if "#" in target else ""
    kind = _kind(resolved, docs_dir)
    if kind == "keep":
        rel = resolved.relative_to(docs_dir).as_posix()
        return posixpath.relpath(rel, page_dir or ".") + anchor, None
    if kind == "page":
        page = SITE_PAGES[resolved.relative_to(REPO).as_posix()]
        return posixpath.relpath(page, page_dir or "."), None  # anchors of the repository file do not carry over
    if kind == "copy":
        return posixpath.relpath(resolved.relative_to(REPO).as_posix(), page_dir or "."), None
    if kind == "text":
        return None, resolved.relative_to(REPO).as_posix()
    log.warning("%s links %s, which does not exist in the repository", _state["page"],
                resolved.relative_to(REPO).as_posix())
    return None, None


def _rewrite_line(line: str, base: Path, included: bool) -> str:
    def inline(m: re.Match[str]) -> str:
        target = m["target"].strip("<>")
        if not included and _kind_of(target, base) == "keep":
            return m[0]
        new, text = _rewrite(target, base)
        if text is not None:
            label = m["head"].lstrip("!")[1:-1]
            return f"{label} (`{text}`)" if text not in label else label
        if new is None:
            return m[0]
        return f"{m['head']}({new}{m['title'] or ''})"

    def attr(m: re.Match[str]) -> str:
        if not included and _kind_of(m["target"], base) == "keep":
            return m[0]
        new, _ = _rewrite(m["target"], base)
        return f"{m['head']}{new}{m['rest']}" if new else m[0]

    line = INLINE.sub(inline, line)
    line = HTML_ATTR.sub(attr, line)
    ref = REFERENCE.match(line)
    if ref and (included or _kind_of(ref["target"], base) != "keep"):
        new, _ = _rewrite(ref["target"].strip("<>"), base)
        if new:
            line = f"{ref['head']}{new}{ref['rest']}"
    return line


def _kind_of(target: str, base: Path) -> str | None:
    resolved = _resolve(base, target)
    return None if resolved is None else _kind(resolved, _state["docs_dir"])


class _LinksPreprocessor(Preprocessor):
    """Rewrites the links that leave docs/pages (runs after pymdownx.snippets has included files)."""

    def run(self, lines: list[str]) -> list[str]:
        docs_dir: Path = _state["docs_dir"]
        page_base = (docs_dir / (_state["page"] or "index.md")).parent
        out: list[str] = []
        base, included, fenced = page_base, False, False
        for line in lines:
            begin, end = BEGIN.match(line), END.match(line)
            if begin:
                base, included = (REPO / begin["path"]).parent, True
                continue
            if end:
                base, included = page_base, False
                continue
            if FENCE.match(line):
                fenced = not fenced
            out.append(line if fenced else _rewrite_line(line, base, included))
        return out


class _LinksExtension(Extension):
    def extendMarkdown(self, md: Any) -> None:  # Markdown's API names it
        md.preprocessors.register(_LinksPreprocessor(md), "policysearch_links", 31)  # snippets is 32
