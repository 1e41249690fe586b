"""Run, or only parse, the examples of the documentation.

    python docs/run_examples.py               # run every example of the guide pages, in order
    python docs/run_examples.py --check       # parse every example, run nothing (a fraction of a second
                                              # once torch is imported: the registries load it)
    python docs/run_examples.py --page augment --page schedules   # only these guide pages

What counts as an example, in the pages under docs/pages/ (and README.md for --check):

* in a ```bash block, every line that starts with ``policysearch `` (a line ending in ``\\`` goes on
  on the next one); the block's other lines (pip, make, tensorboard, ray, scripts) are shown, not run;
* every ```python block.

An HTML comment ``<!-- no-run: reason -->`` on the line right above a block's opening fence keeps
the block from running (a Ray cluster, a download); ``--check`` still parses it. Use it sparingly.

``--check`` parses every ``policysearch`` line with the real parser
(``policysearch.cli.build_parser``; the text after a pipe or a redirection is dropped) and compiles
every Python block, on every page and in README.md. The default mode runs the guide pages
(getting-started.md and guides/*.md): each page in a fresh temporary folder, its blocks in order, so
that a later block may use what an earlier one wrote. The folder holds a link ``policies`` to the
checkout's ``policies/``, so that ``policies/zoo/...`` paths work as they do from the repository
root. ``policysearch`` is the one installed beside the Python that runs this script; the
environment sets ``TQDM_DISABLE=1``, ``POLICYSEARCH_ENERGY=estimate`` and ``MPLBACKEND=Agg``.
It prints each example's seconds and stops at the first failure (``--keep-going``: at the end of
that page), printing the failed command's output; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
PAGES = DOCS / "pages"
GUIDES = ("getting-started.md", "guides/*.md")  # the pages whose examples run
NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(?P<reason>.+?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>", "2>&1"}


@dataclass
class Example:
    page: str  # path relative to docs/pages (or "README.md")
    line: int  # the line the example starts on (1-based)
    kind: str  # "cli" or "python"
    text: str  # one joined command line, or the Python source
    no_run: str | None  # the reason given in a no-run comment, if any

    def label(self) -> str:
        first = self.text if self.kind == "cli" else "python: " + self.text.strip().splitlines()[0]
        return first if len(first) <= 110 else first[:107] + "..."


def blocks(path: Path) -> list[tuple[int, str, list[str], str | None]]:
    """The fenced blocks of a Markdown file: (first line number, language, lines, no-run reason)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match["indent"], match["fence"], match["lang"].lower()
        reason = None
        if i > 0 and (marker := NO_RUN.match(lines[i - 1])):
            reason = marker["reason"]
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        found.append((i + 2, lang, body, reason))
        i = j + 1
    return found


def examples(path: Path, name: str) -> list[Example]:
    """The examples of one page, in order."""
    out = []
    for start, lang, body, reason in blocks(path):
        if lang in ("python", "py"):
            out.append(Example(name, start, "python", "\n".join(body) + "\n", reason))
        elif lang in ("bash", "sh", "shell", "console"):
            k = 0
            while k < len(body):
                line, first = body[k].strip(), k
                while line.endswith("\\") and k + 1 < len(body):
                    k += 1
                    line = line[:-1].rstrip() + " " + body[k].strip()
                if line.startswith("policysearch "):
                    out.append(Example(name, start + first, "cli", line, reason))
                k += 1
    return out


def page_files(guides_only: bool) -> list[tuple[Path, str]]:
    if guides_only:
        paths = [p for pattern in GUIDES for p in sorted(PAGES.glob(pattern))]
    else:
        paths = sorted(PAGES.rglob("*.md"))
    files = [(p, p.relative_to(PAGES).as_posix()) for p in paths]
    if not guides_only:
        files.append((REPO / "README.md", "README.md"))
    return files


def no_run_problems(path: Path, name: str) -> list[str]:
    """A no-run comment must sit right above a block's opening fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    problems = []
    for i, line in enumerate(lines):
        if NO_RUN.match(line) and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
            problems.append(f"{name}:{i + 1}: a no-run comment must be on the line right above a code fence")
    return problems


def cli_tokens(line: str) -> list[str]:
    """The command's arguments, without `policysearch` and without what follows a pipe or redirection."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = []
    for token in lexer:
        if token in SHELL_STOP:
            break
        tokens.append(token)
    return tokens[1:]


def check(paths: list[tuple[Path, str]]) -> tuple[int, list[str]]:
    """Parse every CLI example and compile every Python example; (examples seen, problems)."""
    from policysearch.cli import build_parser

    parser = build_parser()
    seen, problems = 0, []
    for path, name in paths:
        problems += no_run_problems(path, name)
        for ex in examples(path, name):
            seen += 1
            where = f"{name}:{ex.line}"
            if ex.kind == "python":
                try:
                    compile(ex.text, where, "exec")
                except SyntaxError as exc:
                    problems.append(f"{where}: Python block does not compile: {exc}")
                continue
            try:
                tokens = cli_tokens(ex.text)
            except ValueError as exc:
                problems.append(f"{where}: cannot split the command ({exc}): {ex.text}")
                continue
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(tokens)
            except SystemExit as exc:
                if exc.code not in (0, None):
                    message = err.getvalue().strip().splitlines()
                    problems.append(f"{where}: {ex.text}\n    {message[-1] if message else f'exit {exc.code}'}")
            except Exception as exc:  # a type function that breaks is a problem to report, not a crash
                problems.append(f"{where}: {ex.text}\n    {type(exc).__name__}: {exc}")
    return seen, problems


def run_page(page: Path, name: str, timeout: float, threads: int | None = None,
             print: Any = print) -> tuple[list[tuple[float, Example]], Example | None]:
    """Run one page's examples in a fresh folder; (timings, the example that failed or None).
    `threads` caps the torch / OpenMP threads of every example (pages run side by side)."""
    env = dict(os.environ, TQDM_DISABLE="1", POLICYSEARCH_ENERGY="estimate", MPLBACKEND="Agg")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    timings: list[tuple[float, Example]] = []
    with tempfile.TemporaryDirectory(prefix="policysearch-docs-") as tmp:
        folder = Path(tmp)
        (folder / "policies").symlink_to(REPO / "policies", target_is_directory=True)
        for ex in examples(page, name):
            if ex.no_run:
                print(f"  {'skip':>7}  {ex.label()}  (no-run: {ex.no_run})")
                continue
            if ex.kind == "cli":
                command = ["bash", "-c", ex.text]
            else:
                script = folder / f"_example_{ex.line}.py"
                script.write_text(ex.text, encoding="utf-8")
                command = [sys.executable, script.name]
            start = time.perf_counter()
            try:
                done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
                code, output = done.returncode, done.stdout + done.stderr
            except subprocess.TimeoutExpired as exc:
                code = 124
                output = f"{exc.stdout or ''}{exc.stderr or ''}\n(timed out after {timeout:g} s)"
            seconds = time.perf_counter() - start
            timings.append((seconds, ex))
            if code != 0:
                print(f"  {seconds:6.1f}s  {ex.label()}  FAILED (exit {code})")
                print(f"\n{'=' * 30} {name}:{ex.line} failed {'=' * 30}\n{ex.text.rstrip()}\n{'-' * 80}")
                print("\n".join(output.rstrip().splitlines()[-60:]))
                print("=" * 80)
                return timings, ex
            print(f"  {seconds:6.1f}s  {ex.label()}")
    return timings, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="parse and compile every example, run nothing")
    parser.add_argument("--page", action="append", default=[],
                        help="run only this guide page (name without .md, e.g. augment); repeatable")
    parser.add_argument("--keep-going", action="store_true", help="after a failure, go on with the next page")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one example may take (default 600)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="pages run side by side, each example with one torch thread (default 1: one page at a "
                             "time, torch's own threads)")
    args = parser.parse_args(argv)

    if args.check:
        start = time.perf_counter()
        seen, problems = check(page_files(guides_only=False))
        for problem in problems:
            print(problem)
        print(f"{seen} examples parsed, {len(problems)} problems, {time.perf_counter() - start:.2f} s")
        return 1 if problems else 0

    pages = page_files(guides_only=True)
    if args.page:
        wanted = set(args.page)
        pages = [(p, n) for p, n in pages if p.stem in wanted]
        missing = wanted - {p.stem for p, _ in pages}
        if missing:
            print(f"no guide page named {', '.join(sorted(missing))}", file=sys.stderr)
            return 2
    total, count, failed = 0.0, 0, []
    started = time.perf_counter()

    def one(page: tuple[Path, str]) -> tuple[list[str], list[tuple[float, Example]], Example | None]:
        lines: list[str] = [page[1]]
        timings, failure = run_page(page[0], page[1], args.timeout, 1 if args.jobs > 1 else None, lines.append)
        return lines, timings, failure

    if args.jobs > 1:  # every page in its own folder: pages are independent; their output printed in order
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(one, pages))
    else:
        results = []
        for page in pages:
            results.append(one(page))
            if results[-1][2] is not None and not args.keep_going:
                break
    for lines, timings, failure in results:
        print("\n".join(lines))
        page_seconds = sum(s for s, _ in timings)
        total += page_seconds
        count += len(timings)
        print(f"  {page_seconds:6.1f}s  in all, {len(timings)} examples")
        if failure is not None:
            failed.append(f"{failure.page}:{failure.line}")
    print(f"{count} examples ran in {total:.1f} s of example time, {time.perf_counter() - started:.1f} s wall"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
