import subprocess
import sys

import pytest

from policysearch.errors import MissingExtraError


def test_import_is_light_and_registers_envs():
    code = ("import sys, policysearch, gymnasium; "
            "assert 'torch' not in sys.modules, 'torch imported at import time'; "
            "ids = [i for i in gymnasium.registry if i.startswith('policysearch/')]; print(sorted(ids))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "policysearch/Augment-v0" in out and "policysearch/Schedule-v0" in out and "policysearch/Compress-v0" in out


def test_lazy_public_names_resolve():
    import policysearch
    import policysearch.policies as policies

    for name in policysearch.__all__:
        assert getattr(policysearch, name) is not None
    for name in policies.__all__:
        assert getattr(policies, name) is not None
    with pytest.raises(AttributeError):
        policysearch.no_such_name  # noqa: B018


def test_missing_optuna_names_the_extra(monkeypatch, digits):
    import gymnasium as gym

    from policysearch.search import Budget, run_search

    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` raise ImportError
    env = gym.make("policysearch/Augment-v0", data=digits, model="mlp", mode="static", episode_length=1,
                   steps_per_segment=1, batch_size=32)
    with pytest.raises(MissingExtraError, match=r"policysearch\[optuna\]"):
        run_search(env, "tpe", Budget(child_trainings=1), None, progress=False)


def test_import_contracts_hold(tmp_path):
    """The layers and no-cycle contracts (pyproject.toml, import-linter) on the package as installed:
    envs/ and policies/ are mapped in by package-dir, so the tree is installed into a folder first."""
    from pathlib import Path

    pytest.importorskip("importlinter")
    root = Path(__file__).resolve().parents[1]
    view = tmp_path / "view"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(view), str(root)], check=True, capture_output=True, cwd=tmp_path)
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), str(root / "pyproject.toml")], capture_output=True, text=True, cwd=view,
                          env={**__import__("os").environ, "PYTHONPATH": str(view)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_every_subpackage_is_listed_for_the_wheel():
    """pyproject.toml lists packages explicitly (envs/ and policies/ are mapped in): a new
    sub-package left out would install from a checkout but vanish from a built wheel."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"policysearch." + str(p.parent.relative_to(root / "policysearch")).replace("/", ".")
             for p in (root / "policysearch").rglob("__init__.py") if p.parent != root / "policysearch"}
    assert found <= listed, f"missing from pyproject.toml packages: {sorted(found - listed)}"


def test_old_import_paths_still_work_with_a_deprecation_warning():
    import importlib

    with pytest.warns(DeprecationWarning, match="policysearch.trainer moved to policysearch.train.trainer"):
        old = importlib.import_module("policysearch.trainer")
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import Trainer

    assert old.train_run is train_run and old.Trainer is Trainer  # a split module serves both halves
    with pytest.warns(DeprecationWarning):
        from policysearch.stats import paired_bootstrap
    from policysearch.analysis.stats import paired_bootstrap as new

    assert paired_bootstrap is new
    with pytest.raises(AttributeError, match="moved to policysearch.train.trainer"):
        old.no_such_name  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("policysearch.no_such_module")
