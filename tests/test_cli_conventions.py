"""The conventions every command keeps: --json owns stdout, quiet progress without a terminal, -q / -v,
help that shows defaults, choices and examples, labels that tell files apart, robustness columns."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from policysearch.cli import build_parser, main

FAST = ["--dataset", "digits", "--train-size", "300", "--epochs", "1", "--model", "mlp"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------- --json owns stdout
@pytest.mark.parametrize("argv", [
    ["train", *FAST],
    ["evaluate", *FAST, "--augment", "none", "--seeds", "1"],
    ["augment", "--search-only",
     "--dataset", "digits", "--train-size", "300", "--model", "mlp", "--controller", "random",
     "--budget", "1", "--episode-length", "1", "--steps-per-segment", "1", "--out", "{tmp}/aug"],
    ["models"],
], ids=["train", "evaluate", "augment", "models"])
def test_json_stdout_is_one_document_and_the_report_goes_to_stderr(argv, capsys, tmp_path) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    json.loads(out)  # the whole of stdout, as `... --json | jq .` reads it
    assert "|" in err  # the readable table is still shown, on stderr


def test_without_a_terminal_stderr_holds_no_progress_bar(capsys) -> None:
    # No --no-progress: pytest's captured stderr is not a terminal, so the bars turn themselves off.
    code, _, err = run(["train", *FAST], capsys)
    assert code == 0, err
    assert "\r" not in err


def test_progress_follows_the_terminal_tqdm_disable_and_the_flags(monkeypatch) -> None:
    from policysearch.cli.options import show_progress

    args = argparse.Namespace(no_progress=False, quiet=0)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert show_progress(args)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not show_progress(args)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert show_progress(args)
    assert not show_progress(argparse.Namespace(no_progress=True, quiet=0))
    assert not show_progress(argparse.Namespace(no_progress=False, quiet=1))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not show_progress(args)


# ---------------------------------------------------------------------- -q / -v
@pytest.mark.parametrize(("flags", "info_shown", "debug_shown"),
                         [([], True, False), (["-q"], False, False), (["-v"], True, True)])
def test_quiet_and_verbose_set_the_log_level(flags, info_shown, debug_shown, capsys, monkeypatch) -> None:
    cli_main = importlib.import_module("policysearch.cli.main")  # the module (the package exports main())

    def cmd_models(args: argparse.Namespace) -> int:
        log = logging.getLogger("policysearch.data.download")  # where "downloading ..." comes from
        log.info("downloading x to y")
        log.debug("a debug detail")
        log.warning("a warning")
        return 0

    monkeypatch.setattr(cli_main, "cmd_models", cmd_models)
    code, out, err = run(["models", *flags], capsys)
    assert code == 0 and out == ""
    assert ("downloading x to y" in err) is info_shown
    assert ("a debug detail" in err) is debug_shown
    assert ("warning: a warning" in err) is True
    # afterwards the caller's logging is as it was
    assert logging.getLogger("policysearch").handlers == [] and logging.getLogger("policysearch").propagate


# ---------------------------------------------------------------------- help
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_that_shows_its_default_and_every_command_examples() -> None:
    for name, sub in _subparsers(build_parser()).items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings}: no help"
            if action.option_strings and action.nargs != 0:
                helped = sub.formatter_class(prog=name)._get_help_string(action)
                assert "default" in helped or "required" in helped, f"{name} {action.option_strings}: no default"
        tail = text.rstrip().split("examples:")[-1]
        assert "examples:" in text and tail.count("policysearch ") >= 2, f"{name}: no examples at the end of help"


def test_help_lists_the_registries_names() -> None:
    from policysearch.data import DATASETS
    from policysearch.metrics import REWARD_METRICS
    from policysearch.models import MODELS
    from policysearch.policies.augment import BUILTIN_POLICIES
    from policysearch.policies.schedule import SCHEDULES
    from policysearch.search.controllers.registry import controller_names

    subs = _subparsers(build_parser())
    evaluate = " ".join(subs["evaluate"].format_help().split())
    augment = " ".join(subs["augment"].format_help().split())
    compress = " ".join(subs["compress"].format_help().split())
    for names, text in ((DATASETS, evaluate), (MODELS, evaluate), (BUILTIN_POLICIES, evaluate),
                        (SCHEDULES, evaluate), (controller_names("env"), augment), (controller_names(), compress),
                        (REWARD_METRICS, augment)):
        assert ", ".join(names) in text, names
    assert "uniform" not in augment.split("--controller")[1].split("--budget")[0]  # a plan searcher drives no env


def test_building_the_parser_and_top_level_help_import_no_torch() -> None:
    code = ("import sys; from policysearch.cli import build_parser; p = build_parser(); p.format_help(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------- labels
def test_files_are_labelled_by_their_name_when_it_is_unique_else_by_path(tmp_path: Path) -> None:
    from policysearch.analysis.compare import policy_labels
    from policysearch.policies.augment import AugmentPolicy, builtin_policy

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        AugmentPolicy(crop=0.1, name="learned").save(tmp_path / folder / "policy.json")
    AugmentPolicy(flip=0.5, name="mine").save(tmp_path / "mine.json")
    a, b, mine = str(tmp_path / "a" / "policy.json"), str(tmp_path / "b" / "policy.json"), str(tmp_path / "mine.json")
    assert policy_labels(["none", "trivial", a, b]) == ["none", "trivial", a, b]
    assert policy_labels(["none", a, mine]) == ["none", "learned", "mine"]
    assert policy_labels([builtin_policy("cropflip")]) == ["cropflip"]
    (tmp_path / "none.json").write_text(json.dumps({**AugmentPolicy(name="none").to_dict()}))
    assert policy_labels(["none", str(tmp_path / "none.json")]) == ["none", str(tmp_path / "none.json")]


def test_evaluate_labels_two_policy_files_apart_and_adds_robustness(capsys, tmp_path: Path) -> None:
    from policysearch.policies.augment import AugmentPolicy

    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        paths.append(str(AugmentPolicy(crop=0.1, name="policy").save(tmp_path / folder / "policy.json")))
    argv = ["evaluate", *FAST, "--augment", f"none,{paths[0]},{paths[1]}", "--seeds", "1", "--robustness", "0.03",
            "--json"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert [e["augment"] for e in result["results"]] == ["none", *paths]
    for entry in result["results"]:
        fgsm, pgd, clean = (entry["test"][m]["mean"] for m in ("fgsm_accuracy", "pgd_accuracy", "accuracy"))
        assert 0.0 <= pgd <= clean + 1e-9 and 0.0 <= fgsm <= clean + 1e-9
        assert entry["robustness"]["epsilon"] == 0.03 and entry["cost"]["energy_source"] == "estimated"
    assert "test fgsm_accuracy" in err and "test pgd_accuracy" in err and "kWh (estimated)" in err
