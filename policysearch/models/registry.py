"""Every way to name a network, resolved to one `ModelSpec`: a name runs, files and worker processes share.

A model is given as

- a built-in or registered name: ``"cnn"``, or one added with `register_model`;
- an import path ``"package.module:function"`` or a file ``"path/to/models.py:function"``: a factory
  called as ``function(input_shape, num_classes)`` (``input_shape`` is ``(C, H, W)``);
- ``"torchvision:NAME"`` / ``"timm:NAME"``: that architecture, untrained, its first layer and its
  classifier fitted to the data's channels and classes (extras ``torchvision`` / ``timm``);
- ``"smp:ARCH"`` / ``"smp:ARCH:ENCODER"``: a segmentation-models-pytorch network (``smp:Unet``,
  ``smp:FPN``, ...), untrained, a dense model for segmentation and restoration (extra ``segmentation``);
- in Python, also a factory (a function or an ``nn.Module`` class taking ``(input_shape, num_classes)``)
  or an ``nn.Module`` instance (a template: each child is a deep copy, its layers re-initialised
  from the child's seed with ``reset_parameters``).

Every form resolves to a spec whose ``name`` is a string (the factory's import path where it has one),
so a `TrainConfig` stays plain JSON. What exists only in this process (a registered name, a factory
defined in a script or a notebook, a template) is *shipped* to worker processes and Ray actors with
the run (`shipped_models` / `restore_models`); one that cannot be pickled is refused before the first
child, with the reason (`policysearch.search.shipping.check_crosses`).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from policysearch.checks import check_int, check_shape
from policysearch.errors import ConfigError, UnknownNameError
from policysearch.imports import ImportPath, first_line, import_path
from policysearch.models.builtin import MLP, SmallCNN, SmallResNet, TinyViT
from policysearch.models.external import hub_spec
from policysearch.models.spec import Factory, ModelSpec
from policysearch.models.unet import UNet, residual_unet
from policysearch.tasks import get_task

__all__ = ["MODELS", "ModelSpec", "build_model", "model_table", "register_model",
           "resolve_model", "restore_models", "shipped_models"]

#: The built-in models, and those added with `register_model` (by name).
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("mlp", MLP, "2 hidden layers (256, 128)", "sgd", 0.05, "builtin"),
        ModelSpec("cnn", SmallCNN, "conv32-pool-conv64-pool-fc128 with batch norm", "sgd", 0.05, "builtin"),
        ModelSpec("resnet", SmallResNet, "ResNet-8: stem + 3 residual stages (16/32/64)", "sgd", 0.1, "builtin"),
        ModelSpec("vit", TinyViT, "tiny ViT: dim 64, depth 2, 4 heads", "adamw", 2e-3, "builtin"),
        ModelSpec("unet", UNet, "U-Net (Ronneberger et al. 2015), small: 3 levels (16/32/64, 128 at the bottom), "
                  "concatenated skips, bilinear up-sampling", "adamw", 1e-3, "builtin", dense=True),
        ModelSpec("unet-residual", residual_unet, "the U-Net plus its input: learns a correction of the image "
                  "(restoration: outputs = image channels)", "adamw", 1e-3, "builtin", dense=True),
    )
}
_BUILTIN = frozenset(MODELS)
# Specs resolved in this process that another process cannot rebuild from the name alone
# (registered names, factories and templates): shipped with the run to its workers.
_LOCAL: dict[str, ModelSpec] = {}
FORMS = ("a built-in or registered name", "'package.module:function'", "'path/to/file.py:function'",
         "'torchvision:NAME'", "'timm:NAME'", "'smp:ARCH'")


def register_model(name: str, factory: Factory, *, description: str = "", optimizer: str = "sgd",
                   lr: float = 0.05, replace: bool = False, dense: bool = False) -> ModelSpec:
    """Add a model by name, for ``model=name`` in Python (worker processes and Ray actors included).

    Args:
        name: the key; not a built-in name, and without ":" (which marks import paths).
        factory: ``factory(input_shape, num_classes) -> nn.Module``.
        description, optimizer, lr, dense: as in `ModelSpec` (``dense=True``: it returns
            ``(B, num_classes, H, W)``, for segmentation and restoration).
        replace: allow replacing a registered (not a built-in) name.

    Raises:
        ConfigError: a built-in or taken name, or a bad field.
    """
    if not isinstance(name, str) or ":" in name or not name.strip():
        raise ConfigError(f"model name is {name!r}: expected a non-empty name without ':' (':' marks import paths)")
    if name in _BUILTIN:
        raise ConfigError(f"model {name!r} is built in; register yours under another name")
    if name in MODELS and not replace:
        raise ConfigError(f"model {name!r} is already registered; pass replace=True to replace it")
    spec = ModelSpec(name, factory, description, optimizer, lr, "registered", dense=bool(dense))
    MODELS[name] = _LOCAL[name] = spec
    return spec


def resolve_model(model: Any) -> ModelSpec:
    """The spec of any accepted form of model (see the module docstring).

    Raises:
        UnknownNameError: an unknown name (with a "did you mean").
        ConfigError: an import path that does not import, a torchvision / timm name that does not exist,
            or a value of another type; the message names it and the accepted forms.
        MissingExtraError: torchvision, timm or segmentation-models-pytorch is not installed.
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, nn.Module):
        return _local(ModelSpec(f"template:{type(model).__name__}", _Template(model),
                                f"copies of a {type(model).__name__} instance, re-initialised per child",
                                source="template"))
    if isinstance(model, str):
        return _resolve_name(model.strip())
    if callable(model):
        path = _import_path(model)
        if path is not None:
            return _resolve_name(path)
        qualname = getattr(model, "__qualname__", type(model).__name__)
        return _local(ModelSpec(f"callable:{qualname}", model, f"the factory {qualname}", source="callable"))
    raise ConfigError(f"model is a {type(model).__name__}; expected {', '.join(FORMS)}, a factory "
                      "(input_shape, num_classes) -> nn.Module, or an nn.Module instance")


def _resolve_name(name: str) -> ModelSpec:
    if name in MODELS:
        return MODELS[name]
    if name in _LOCAL:
        return _LOCAL[name]
    prefix, sep, rest = name.partition(":")
    if not sep:
        raise UnknownNameError("model", name, tuple(MODELS))
    if not prefix or not rest:
        raise ConfigError(f"model {name!r}: expected {', '.join(FORMS[1:])}")
    if prefix in ("torchvision", "timm", "smp"):
        return hub_spec(prefix, rest)
    factory = ImportedFactory(import_path(prefix, rest, f"model {name!r}"))
    return _local(ModelSpec(name, factory, f"{rest} from {prefix}", source="import"))


def _local(spec: ModelSpec) -> ModelSpec:
    _LOCAL[spec.name] = spec
    return spec


def _import_path(fn: Any) -> str | None:
    """``"module:qualname"`` when `fn` can be imported back by it in any process, else None."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if obj is fn else None


class _Template:
    """Copies of a module instance, each re-initialised (``reset_parameters``) from the caller's RNG."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        model = copy.deepcopy(self.module)
        for layer in model.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()
        return model


class ImportedFactory:
    """A factory found by import path or file (`policysearch.imports.ImportPath`): plain data, so it
    pickles and imports again in a worker process, even where the module is not on its path."""

    def __init__(self, path: ImportPath) -> None:
        self.path = path

    def __call__(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return self.path.load()(input_shape, num_classes)


_CHECKED: set[tuple[str, tuple[int, int, int], tuple[int, ...]]] = set()


def build_model(model: Any, input_shape: tuple[int, int, int], num_classes: int,
                output_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Build `model` (any form `resolve_model` takes) for images of `input_shape` (C, H, W) and `num_classes`
    outputs (class scores; for restoration, image channels).

    The first build of a (model, shape, outputs) in a process is checked by one forward pass on a
    zero batch: a network that cannot take the images or does not return `output_shape` per image
    (default ``(num_classes,)``, or ``(num_classes, H, W)`` for a dense model such as ``unet``; see
    `policysearch.tasks.Task.output_shape`) is refused here, in one line, instead of failing inside training.

    Raises:
        ConfigError: the model cannot be built for this data (the message says why).
    """
    spec = resolve_model(model)
    shape = check_shape("input_shape", input_shape)
    if output_shape is None:
        output_shape = (int(num_classes), *shape[1:]) if spec.dense else (int(num_classes),)
    expected = tuple(output_shape)
    # A dense output of one channel is fine (restoration of grey images); one class is not.
    check_int("num_classes", num_classes, 1 if len(expected) > 1 else 2)
    if spec.dense and len(expected) == 1:
        raise ConfigError(f"model {spec.name!r} predicts a map per pixel (for segmentation or restoration data), "
                          f"but one score per class is wanted here (classification): choose a classifier such "
                          f"as {', '.join(n for n, s in MODELS.items() if not s.dense)}")
    if spec.name == "cnn" and min(shape[1:]) < 4:
        raise ConfigError(f"model 'cnn' pools twice and needs images of at least 4x4, got {shape[1:]}")
    try:
        net = spec.factory(shape, num_classes)  # type: ignore[arg-type]
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"model {spec.name!r} could not be built for images {shape} and {num_classes} classes: "
                          f"{type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model {spec.name!r}: its factory returned a {type(net).__name__}, expected an nn.Module")
    key = (spec.name, shape, expected)
    if key not in _CHECKED:
        _check_forward(net, spec.name, shape, num_classes, expected)
        _CHECKED.add(key)
    return net


def build_for_data(model: Any, data: Any) -> nn.Module:
    """`build_model` for a `DeviceData` (or anything with ``input_shape``, ``output_size`` and ``task``): the
    outputs its task wants (class scores; a score map per class; an image)."""
    outputs = data.output_size
    return build_model(model, data.input_shape, outputs, get_task(data.task).output_shape(data.input_shape, outputs))


def _check_forward(net: nn.Module, name: str, shape: tuple[int, int, int], num_classes: int,
                   expected: tuple[int, ...]) -> None:
    param = next(net.parameters(), None)
    if param is not None and not param.is_floating_point():
        raise ConfigError(f"model {name!r} has {param.dtype} parameters; expected floating point")
    check_outputs(net, f"model {name!r}", shape, num_classes, expected)


def check_outputs(net: nn.Module, what: str, shape: tuple[int, int, int], num_classes: int,
                  output_shape: tuple[int, ...] | None = None) -> None:
    """One forward pass of a zero batch (eval mode, no gradient, no RNG touched, the mode restored):
    `net` must take images of `shape` and return `output_shape` per image (default: ``num_classes`` scores).

    Raises:
        ConfigError: naming `what`, the shape, and what came out instead.
    """
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = net(torch.zeros(2, *shape, device=device))
    except Exception as exc:
        raise ConfigError(f"{what} cannot take images of shape {shape} (C, H, W): {type(exc).__name__}: "
                          f"{first_line(exc)}") from None
    finally:
        net.train(was_training)
    expected = (2, *(output_shape or (num_classes,)))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if output_shape is None or tuple(output_shape) == (num_classes,):
            raise ConfigError(f"{what} returns {got} for a batch of 2 images; expected class scores of shape "
                              f"(2, {num_classes}) for the data's {num_classes} classes")
        raise ConfigError(f"{what} returns {got} for a batch of 2 images; expected {expected} (a dense "
                          f"prediction: {output_shape[0]} channels at the input's size)")


def shipped_models() -> dict[str, ModelSpec]:
    """The specs this process resolved that other processes cannot rebuild from a name (send them along)."""
    return dict(_LOCAL)


def restore_models(specs: Mapping[str, ModelSpec]) -> None:
    """Make `specs` (from `shipped_models` in the parent) resolvable here (a worker process, a Ray actor)."""
    for name, spec in specs.items():
        _LOCAL.setdefault(name, spec)
        if spec.source == "registered":
            MODELS.setdefault(name, spec)


def model_table() -> list[dict[str, object]]:
    """One row per registered model with what it predicts and its parameter count on 28x28 grey images (10
    class scores, or one output map for a dense model), for `policysearch models`."""
    rows = []
    for spec in MODELS.values():
        outputs = 1 if spec.dense else 10  # a dense model: one output map (a restoring net returns the image)
        params = sum(p.numel() for p in spec.factory((1, 28, 28), outputs).parameters())
        rows.append({"model": spec.name, "description": spec.description,
                     "predicts": "a map per pixel (segmentation, restoration)" if spec.dense else "class scores",
                     "params (1x28x28; 10 classes or 1 map)": params,
                     "default optimizer": f"{spec.optimizer} lr={spec.lr:g}"})
    return rows

