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
