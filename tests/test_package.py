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


# The CLI is the composition root: it turns command-line arguments into envs (today through
# `gymnasium.make` and the registered ids), so it may import them. The package `__init__` is
# scanned like any engine module: it registers the envs by entry-point *strings*, which load on
# `gymnasium.make`, and must never import them.
MAY_IMPORT_ENVS = {"policysearch/cli/searching.py"}


def _imported_modules(path, package):
    """Absolute names of the modules `path` imports (statements and importlib.import_module("...") calls)."""
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            names += [f"{base}.{alias.name}" for alias in node.names] + [base]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append(node.args[0].value)
    return names


def test_engine_and_artefacts_never_import_the_envs():
    """Arrows point down: envs/ builds on policysearch/ and policies/, never the other way round."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    scanned = {"policysearch": sorted((root / "policysearch").glob("*.py")),
               "policysearch.policies": sorted((root / "policies").glob("*.py"))}
    assert any(p.name == "trainer.py" for p in scanned["policysearch"]), "the engine modules were not found"
    assert any(p.name == "adaptive.py" for p in scanned["policysearch.policies"]), "the artefacts were not found"
    offending = []
    for package, paths in scanned.items():
        for path in paths:
            relative = path.relative_to(root).as_posix()
            if relative in MAY_IMPORT_ENVS:
                continue
            bad = [name for name in _imported_modules(path, package)
                   if name == "policysearch.envs" or name.startswith("policysearch.envs.")]
            offending += [f"{relative} imports {name}" for name in bad]
    assert not offending, "; ".join(offending)


def test_every_subpackage_is_listed_for_the_wheel():
    """pyproject.toml lists packages explicitly (envs/ and policies/ are mapped in): a new
    sub-package left out would install from a checkout but vanish from a built wheel."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"policysearch." + str(p.parent.relative_to(root / "policysearch")).replace("/", ".")
             for p in (root / "policysearch").rglob("__init__.py") if p.parent != root / "policysearch"}
    assert found <= listed, f"missing from pyproject.toml packages: {sorted(found - listed)}"
