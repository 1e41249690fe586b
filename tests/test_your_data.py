"""Your data, your model: real files written here (PNG folders, an .npz, a model module), every job
from the CLI and from Python, worker processes, and the library's figures equal to a plain loop's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from policysearch.cli import main
from policysearch.errors import ConfigError, PolicyFormatError, PolicyInputError

MODULE = '''
from torch import nn


def small_cnn(input_shape, num_classes):
    channels = input_shape[0]
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))


def wrong_classes(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))


def broken(input_shape, num_classes):
    raise RuntimeError("the user's factory fails")
'''


def _write_images(root: Path, channels: int, size: int, per_class: int = 40, classes: int = 4,
                  split: bool = False, odd_size: bool = False) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = dict.fromkeys(range(classes), 0)
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if label >= classes or counts[label] >= per_class:
            continue
        counts[label] += 1
        grey = (image / 16 * 255).astype(np.uint8)
        part = ("test" if counts[label] % 5 == 0 else "train") if split else ""
        folder = root / part / f"class-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        array = grey if channels == 1 else np.stack([grey, grey[::-1], np.roll(grey, 2, axis=1)], axis=-1)
        side = size + 2 if odd_size and i == 0 else size
        Image.fromarray(array).resize((side, side)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's project: an RGB image folder (12x12, 4 classes), a grey one with train/ and test/, a model module."""
    root = tmp_path_factory.mktemp("user")
    (root / "mynets.py").write_text(MODULE)
    return {"root": root, "rgb": _write_images(root / "rgb", 3, 12),
            "grey": _write_images(root / "grey", 1, 10, split=True), "module": root / "mynets.py"}


@pytest.fixture
def in_project(user, monkeypatch, tmp_path):
    """Run from the user's folder (their module importable as `mynets`), with a private cache."""
    monkeypatch.chdir(user["root"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(user["root"]))
    yield user
    sys.modules.pop("mynets", None)


def _run(argv, capsys):
    if argv[0] in ("train", "evaluate", "augment", "schedule", "compress") and "--batch-size" not in argv:
        argv = [*argv, "--batch-size", "32"]  # 160 images: smaller batches than the default 128
    code = main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code, err, command, culprit):
    assert code == 2, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"policysearch {command}: error: ") and culprit in line, line


# ---------------------------------------------------------------------- data sources
def test_an_image_folder_is_read_once_then_from_the_cache(in_project, monkeypatch):
    import policysearch.data.folder as folder
    from policysearch.data import load_data

    raw = load_data("rgb")
    assert raw.x_train.shape[1:] == (3, 12, 12) and raw.classes == [f"class-{k}" for k in range(4)]
    assert len(raw.x_train) + len(raw.x_test) == 160 and raw.source.endswith("rgb")
    monkeypatch.setattr(folder, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    again = load_data("rgb")
    assert again.fingerprint == raw.fingerprint and torch.equal(again.x_train, raw.x_train)


def test_grey_folder_with_its_own_test_split_and_sizes_that_must_agree(in_project, tmp_path):
    from policysearch.data import load_data

    grey = load_data("grey")
    assert grey.x_train.shape[1:] == (1, 10, 10) and len(grey.x_test) == 4 * 8  # test/ kept as the test split
    odd = _write_images(tmp_path / "odd", 1, 10, per_class=6, odd_size=True)
    with pytest.raises(ConfigError, match="differ in size .*--image-size"):
        load_data(odd)
    assert load_data(odd, "16x14").x_train.shape[2:] == (16, 14)


def test_an_npz_and_a_function_with_labels_mapped_and_recorded(in_project, tmp_path):
    from policysearch.data import load_data, prepare

    x = np.random.default_rng(0).random((60, 8, 8, 3)).astype(np.float32)  # NHWC floats in [0, 1]
    y = np.repeat([0, 1, 7, 9], 15)
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y)
    raw = load_data(tmp_path / "mine.npz")
    assert raw.x_train.shape[1:] == (3, 8, 8) and raw.label_map == {0: 0, 1: 1, 7: 2, 9: 3}
    described = prepare(raw).describe()
    assert described["label_map"] == {"0": 0, "1": 1, "7": 2, "9": 3} and described["classes"] == ["0", "1", "7", "9"]
    (tmp_path / "loader.py").write_text("import numpy as np\n\ndef data():\n"
                                        "    return np.zeros((20, 1, 6, 6), np.uint8), np.arange(20) % 2\n")
    assert load_data(f"{tmp_path / 'loader.py'}:data").x_train.shape[1:] == (1, 6, 6)
    np.savez(tmp_path / "negative.npz", x_train=x[:4], y_train=np.array([-1, 0, 1, 1]))
    with pytest.raises(ConfigError, match="label -1"):
        load_data(tmp_path / "negative.npz")
    np.savez(tmp_path / "objects.npz", x_train=np.array([object()], dtype=object), y_train=np.zeros(1))
    with pytest.raises(ConfigError, match="pickled objects"):
        load_data(tmp_path / "objects.npz")


# ---------------------------------------------------------------------- models
def test_every_form_of_model_resolves_to_a_name_and_builds(in_project):
    from policysearch.models import build_model, register_model, resolve_model

    assert resolve_model("mynets:small_cnn").name == "mynets:small_cnn"
    assert resolve_model(f"{in_project['module']}:small_cnn").source == "import"
    import mynets

    assert resolve_model(mynets.small_cnn).name == "mynets:small_cnn"  # an importable factory: by its path
    assert resolve_model(lambda s, k: mynets.small_cnn(s, k)).name == "callable:test_every_form_of_model_" \
        "resolves_to_a_name_and_builds.<locals>.<lambda>"
    template = resolve_model(mynets.small_cnn((3, 12, 12), 4))
    assert template.name == "template:Sequential"
    a, b = (build_model(template, (3, 12, 12), 4) for _ in range(2))
    assert not torch.equal(a[0].weight, b[0].weight)  # re-initialised per build
    register_model("user-cnn", mynets.small_cnn, replace=True)
    assert build_model("user-cnn", (3, 12, 12), 4)(torch.zeros(2, 3, 12, 12)).shape == (2, 4)
    net = build_model("torchvision:resnet18", (1, 16, 16), 5)
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 5)
    pytest.importorskip("timm")
    assert build_model("timm:resnet10t", (3, 16, 16), 4)(torch.zeros(2, 3, 16, 16)).shape == (2, 4)


def test_models_that_cannot_be_built_or_cannot_take_the_data_are_refused_in_one_line(in_project):
    from policysearch.models import build_model, resolve_model

    with pytest.raises(ConfigError, match="returns .*expected class scores of shape"):
        build_model("mynets:wrong_classes", (1, 8, 8), 3)
    with pytest.raises(ConfigError, match="could not be built .*the user's factory fails"):
        build_model("mynets:broken", (1, 8, 8), 3)
    with pytest.raises(ConfigError, match="has no 'nope'"):
        resolve_model("mynets:nope")
    with pytest.raises(ConfigError, match="no module 'nomodule'"):
        resolve_model("nomodule:f")
    with pytest.raises(ConfigError, match="torchvision has no architecture 'resnet19'"):
        resolve_model("torchvision:resnet19")


def _search(model, data, workers=1, backend="local"):
    import gymnasium as gym

    from policysearch.search import Budget, run_search

    env = gym.make("policysearch/Augment-v1", data=data, model=model, episode_length=2, steps_per_segment=3,
                   batch_size=32)
    result = run_search(env, "random", Budget(child_trainings=2), None, progress=False, workers=workers,
                        backend=backend)
    return [e["metric"] for e in result.episodes]


def test_the_same_model_from_python_in_worker_processes_every_form(in_project):
    import mynets

    from policysearch.data import load_data, prepare
    from policysearch.models import register_model

    data = prepare(load_data("rgb"), val_size=0.25)
    register_model("user-cnn", mynets.small_cnn, replace=True)
    reference = _search("mynets:small_cnn", data, workers=2)  # an import path: any process resolves it
    # What exists only in this process crosses to worker processes: a registered name, a lambda (a template
    # travels the same way; in this process it trains the same children as the factory).
    for model in ("user-cnn", lambda shape, k: mynets.small_cnn(shape, k)):
        assert _search(model, data, workers=2) == reference  # same architecture, seeds and initialisation order
    assert _search(mynets.small_cnn((3, 12, 12), 4), data) == _search(mynets.small_cnn, data)


def test_a_users_model_on_a_local_ray(in_project):
    pytest.importorskip("ray")
    import mynets

    from policysearch.data import load_data, prepare
    from policysearch.models import register_model

    data = prepare(load_data("rgb"), val_size=0.25)
    register_model("user-cnn", mynets.small_cnn, replace=True)
    assert _search("user-cnn", data, workers=2, backend="ray") == _search("mynets:small_cnn", data, workers=2)


def test_a_factory_that_cannot_cross_to_workers_is_refused_before_the_first_child(in_project):
    import threading

    import mynets

    from policysearch.data import load_data, prepare

    lock = threading.Lock()  # an object no pickler can send

    def holding_a_lock(shape, k):
        with lock:
            return mynets.small_cnn(shape, k)

    data = prepare(load_data("rgb"), val_size=0.25)
    with pytest.raises(ConfigError, match="cannot be sent to local worker processes .*lock"):
        _search(holding_a_lock, data, workers=2)


# ---------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("normalize", ["none", "standardize"])
def test_the_library_scores_a_model_exactly_as_a_plain_loop_does(in_project, normalize):
    import mynets

    from policysearch.compression.pruning import val_accuracy
    from policysearch.data import load_data, prepare
    from policysearch.train.evaluate import evaluate

    data = prepare(load_data("rgb"), normalize=normalize)
    torch.manual_seed(0)
    model = mynets.small_cnn((3, 12, 12), 4)
    model.train()
    with torch.no_grad():  # settle the batch-norm statistics on some inputs, as a trained model has them
        model(torch.rand(64, 3, 12, 12))
    model.eval()
    mean, std = (torch.tensor(getattr(data.normalization, k)) for k in ("mean", "std"))
    with torch.no_grad():
        x = (data.x_test.float() / 255 - mean[:, None, None]) / std[:, None, None]  # the user's own loop
        yours = (model(x).argmax(1) == data.y_test).double().mean().item()
        x_val = (data.x_val.float() / 255 - mean[:, None, None]) / std[:, None, None]
        yours_val = (model(x_val).argmax(1) == data.y_val).double().mean().item()
    assert evaluate(model, data, "test")["accuracy"] == pytest.approx(yours, abs=1e-9)
    assert val_accuracy(model, data) == pytest.approx(yours_val, abs=1e-9)
    if normalize == "none":
        assert data.normalization.mean == (0.0, 0.0, 0.0) and data.normalization.std == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------------- the jobs from the command line
def test_every_job_on_a_users_folder_and_model_from_the_cli(in_project, capsys):
    code, out, err = _run(["train", "--data", "rgb", "--model", "mynets:small_cnn", "--epochs", "2",
                           "--save", "cnn.pt", "--json"], capsys)
    assert code == 0, err
    trained = json.loads(out)
    assert "no test split" in err  # the carve is said
    code, out, err = _run(["evaluate", "--data", "rgb", "--model", "mynets:small_cnn", "--weights", "cnn.pt",
                           "--epochs", "0", "--augment", "none", "--seeds", "1", "--json"], capsys)
    assert code == 0, err
    scored = json.loads(out)["results"][0]["test"]["accuracy"]["mean"]
    assert scored == pytest.approx(trained["test"]["accuracy"], abs=1e-9)  # the same model, scored the same
    # The whole protocol, small: 2 children, the best re-ranked against two baselines, 2 paired test seeds.
    code, out, err = _run(["augment", "--data", "rgb", "--model", "mynets:small_cnn", "--controller", "random",
                           "--budget", "2", "--episode-length", "2", "--workers", "2", "--out", "runs/aug",
                           "--overwrite", "--epochs", "2", "--top", "1", "--seeds", "2", "--baselines", "none,erasing"],
                          capsys)
    assert code == 0, err
    assert "--data rgb" in out
    policy = json.loads(Path("runs/aug/policy.json").read_text())
    assert policy["provenance"]["classes"] == [f"class-{k}" for k in range(4)]
    assert policy["provenance"]["normalization"]["kind"] == "standardize"
    code, _, err = _run(["schedule", "--data", "rgb", "--model", "mynets:small_cnn", "--controller", "random",
                         "--budget", "2", "--out", "runs/sch", "--overwrite", "--epochs", "2", "--top", "1",
                         "--no-compare", "--baselines", "onecycle"], capsys)
    assert code == 0, err
    pytest.importorskip("torch_pruning")
    code, out, err = _run(["compress", "--data", "rgb", "--model", "mynets:small_cnn", "--weights", "cnn.pt",
                           "--controller", "uniform", "--finetune-epochs", "0.5", "--out", "runs/cmp",
                           "--overwrite", "--json"], capsys)
    assert code == 0, err
    teacher = json.loads(out)["comparison"]["teacher"]["test_accuracy"]
    assert teacher == pytest.approx(trained["test"]["accuracy"], abs=1e-9)


def test_the_exported_policy_in_a_plain_loop_on_the_users_batches(in_project, capsys):
    from policysearch.policies import load_policy

    if not Path("runs/aug/policy.json").exists():
        assert main(["augment", "--search-only", "--data", "rgb", "--model", "mynets:small_cnn", "--controller",
                     "random", "--budget", "1", "--episode-length", "1", "--out", "runs/aug", "--overwrite",
                     "--batch-size", "32", "--no-progress"]) == 0
    policy = load_policy("runs/aug/policy.json")
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 12, 12), torch.randint(0, 4, (32,))
    for step in range(3):
        xb, target = policy(x, y, 4, progress=step / 3, generator=generator)
        loss = -(target * torch.log_softmax(model(xb), 1)).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert xb.shape == x.shape and target.shape == (32, 4) and torch.isfinite(loss)
    bad = {"uint8 pixels: pass x.float\\(\\) / 255": ((x * 255).to(torch.uint8), y),
           "shape \\(B, C, H, W\\), got shape \\(3, 12, 12\\); add the batch": (x[0], y[:1]),
           "convert with x.float\\(\\)": (x.double(), y),
           "0..255 pixels: divide by 255": (x * 255, y),
           "labels must be 0..3": (x, y + 4)}
    for message, (images, labels) in bad.items():
        fresh = load_policy("runs/aug/policy.json")
        with pytest.raises(PolicyInputError, match=message):
            fresh(images, labels, 4)


# ---------------------------------------------------------------------- mistakes: one line, exit 2
def test_input_mistakes_give_one_line_and_exit_2(in_project, capsys, tmp_path):
    torch.save({"0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "plain.pt")
    torch.save({"oops": torch.zeros(2)}, tmp_path / "foreign.pt")
    cases = [
        (["train", "--data", "no-such-folder"], "no such"),
        (["train", "--data", str(_write_images(tmp_path / "odd", 1, 10, per_class=6, odd_size=True))],
         "--image-size"),
        (["train", "--data", "rgb", "--model", "mynets:nope"], "has no 'nope'"),
        (["train", "--data", "rgb", "--model", "mynets:wrong_classes"], "expected class scores"),
        (["train", "--data", "rgb", "--model", "mynets:small_cnn", "--weights", str(tmp_path / "plain.pt")],
         "--normalize"),
        (["train", "--data", "rgb", "--model", "mynets:small_cnn", "--weights", str(tmp_path / "foreign.pt"),
          "--normalize", "none"], "does not fit"),
        (["evaluate", "--data", "rgb", "--epochs", "0"], "--weights"),
        (["train", "--dataset", "digits", "--image-size", "16"], "--image-size"),
        (["train", "--data", "rgb", "--normalize", "1,2,3"], "--normalize"),
        (["compress", "--data", "rgb", "--model", "mynets:small_cnn"], "--weights"),
        (["train", "--data", "rgb", "--augment", "zoo:nope"], "Known: fashion-mnist-1k-cnn-pbt"),
    ]
    for argv, culprit in cases:
        code, _, err = _run(argv, capsys)
        _one_line(code, err, argv[0], culprit)


def test_compress_checks_the_teacher_against_the_data_before_any_search(in_project, tmp_path):
    import mynets

    from policysearch.compression.teacher import check_teacher
    from policysearch.data import load_data, prepare

    data = prepare(load_data("grey"))  # one channel
    rgb_teacher = mynets.small_cnn((3, 10, 10), 4)
    with pytest.raises(ConfigError, match="cannot take images of shape \\(1, 10, 10\\)"):
        check_teacher(rgb_teacher, data)
    with pytest.raises(ConfigError, match="float64.*teacher.float\\(\\)"):
        check_teacher(mynets.small_cnn((1, 10, 10), 4).double(), data)
    with torch.device("meta"):
        meta = mynets.small_cnn((1, 10, 10), 4)
    with pytest.raises(ConfigError, match="meta device"):
        check_teacher(meta, data)
    nan = mynets.small_cnn((1, 10, 10), 4)
    with torch.no_grad():
        nan[0].weight.fill_(float("nan"))
    with pytest.raises(ConfigError, match="NaN"):
        check_teacher(nan, data)
    with pytest.raises(ConfigError, match="expected class scores of shape \\(2, 4\\)"):
        check_teacher(mynets.small_cnn((1, 10, 10), 3), data)
    check_teacher(mynets.small_cnn((1, 10, 10), 4), data)  # the right one passes


def test_weights_files_are_read_safely_and_checked(in_project, tmp_path):
    import mynets

    from policysearch.models.weights import load_weights, read_weights

    model = mynets.small_cnn((3, 12, 12), 4)
    torch.save(model.state_dict(), tmp_path / "ok.pt")
    fresh = mynets.small_cnn((3, 12, 12), 4)
    found = load_weights(fresh, tmp_path / "ok.pt")
    assert torch.equal(fresh[0].weight, model[0].weight) and found.normalization is None
    torch.save(model, tmp_path / "pickled.pt")
    with pytest.raises(PolicyFormatError, match="pickled Python objects"):
        read_weights(tmp_path / "pickled.pt")
    broken = dict(model.state_dict())
    broken["0.weight"] = torch.full_like(broken["0.weight"], float("inf"))
    torch.save(broken, tmp_path / "inf.pt")
    with pytest.raises(PolicyFormatError, match="NaN or infinite"):
        read_weights(tmp_path / "inf.pt")
    with pytest.raises(ConfigError, match="has shape"):
        load_weights(mynets.small_cnn((1, 12, 12), 4), tmp_path / "ok.pt")
