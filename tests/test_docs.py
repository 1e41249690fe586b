"""The documentation's examples parse with the real parser and compile (docs/run_examples.py --check);
CI also runs them all (`make docs-examples`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("run_examples", ROOT / "docs" / "run_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_examples"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_documented_command_parses_and_every_python_block_compiles():
    runner = _runner()
    count, problems = runner.check(runner.page_files(False))
    assert count > 50 and not problems, problems


def test_a_wrong_flag_in_a_guide_would_be_caught(tmp_path):
    runner = _runner()
    page = tmp_path / "page.md"
    page.write_text("```bash\npolicysearch train --dataset digits --no-such-flag 3\n```\n")
    count, problems = runner.check([(page, "page.md")])
    assert count == 1 and len(problems) == 1 and "no-such-flag" in problems[0]


def test_the_readme_stays_short_and_names_the_guides():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for link in ("docs/pages/guides/your-data.md", "benchmarks/RESULTS.md", "examples/"):
        assert link in readme, link
