"""Tests for policysearch/models/unet.py (the built-in `unet`), the `smp:ARCH` form (models/external.py),
the pruning of a U-Net through its concatenated skips (policysearch/channels, CompressionPlan) and the
dense distillation losses (policysearch/compression/distill.py)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from policysearch.channels.flops import FlopsModel, layer_flops
from policysearch.compression.distill import (
    KD_LOSSES,
    distill,
    kd_loss,
    kd_loss_for,
    restoration_kd_loss,
    segmentation_kd_loss,
)
from policysearch.data import DeviceData
from policysearch.errors import ConfigError, MissingExtraError
from policysearch.metrics import count_parameters, flops_per_image
from policysearch.models import MODELS, UNet, build_for_data, build_model, resolve_model
from policysearch.policies.compress import CompressionPlan, channel_groups, kept_channels
from policysearch.tasks import IGNORE_INDEX, get_task

SHAPE = (1, 16, 16)


def _unet(shape=SHAPE, classes=3, seed=0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(shape, classes, **kwargs).eval()


def _example(shape=SHAPE) -> torch.Tensor:
    return torch.zeros(1, *shape)


def _convs(model: torch.nn.Module) -> dict[str, torch.nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


# ---------------------------------------------------------------------- the model


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 9, 13), (1, 16, 16), (3, 32, 32), (2, 17, 8)])
@pytest.mark.parametrize("classes", [1, 5])
def test_unet_returns_a_map_per_output_channel_at_any_size(shape, classes):
    model = build_model("unet", shape, classes)
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, classes, *shape[1:])
    assert torch.isfinite(out).all()


def test_unet_is_a_dense_builtin_with_its_own_defaults_and_clear_errors():
    spec = resolve_model("unet")
    assert (spec.dense, spec.optimizer, spec.lr, spec.source) == (True, "adamw", 1e-3, "builtin")
    assert not any(MODELS[name].dense for name in ("mlp", "cnn", "resnet", "vit"))
    assert "Ronneberger" in sys.modules[UNet.__module__].__doc__
    with pytest.raises(ConfigError, match="at least 8x8, got 4x8"):
        build_model("unet", (1, 4, 8), 3)
    with pytest.raises(ConfigError, match="map per pixel.*choose a classifier such as mlp, cnn"):
        build_model("unet", SHAPE, 3, output_shape=(3,))
    with pytest.raises(ConfigError, match="num_classes"):  # one class is no classification
        build_model("cnn", SHAPE, 1)


def test_unet_builds_for_segmentation_and_restoration_data_but_not_classification():
    for task, classes, expected in (("segmentation", 4, (4, 16, 16)), ("restoration", 1, (1, 16, 16))):
        data = SimpleNamespace(input_shape=SHAPE, output_size=classes, task=task)
        assert build_for_data("unet", data)(torch.rand(2, *SHAPE)).shape == (2, *expected)
    with pytest.raises(ConfigError, match="map per pixel"):
        build_for_data("unet", SimpleNamespace(input_shape=SHAPE, output_size=10, task="classification"))


def test_unet_trains_every_parameter():
    model = _unet().train()
    F.cross_entropy(model(torch.rand(2, *SHAPE)), torch.randint(0, 3, (2, 16, 16))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_unet_residual_adds_the_input_and_needs_matching_channels():
    model = _unet((3, 16, 16), 3, residual=True)
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x), x)
    with pytest.raises(ConfigError, match="num_classes == the image's 3 channels, got 5"):
        UNet((3, 16, 16), 5, residual=True)


def test_unet_widths_and_depth_are_arguments():
    model = UNet((1, 32, 32), 2, width=8, depth=4)
    assert model.down[0][0].out_channels == 8 and model.bottleneck[0].out_channels == 128
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2, 32, 32)


# ---------------------------------------------------------------------- segmentation-models-pytorch


def test_smp_models_are_built_untrained_for_the_data_and_checked():
    pytest.importorskip("segmentation_models_pytorch")
    spec = resolve_model("smp:unet")  # any case
    assert (spec.name, spec.dense, spec.source) == ("smp:Unet", True, "smp")
    model = build_model("smp:Unet", (1, 32, 32), 3)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    assert model.encoder.conv1.in_channels == 1
    with pytest.raises(ConfigError, match="divisible by 32, got 28x28; pad or resize the images to 32x32"):
        build_model("smp:FPN", (3, 28, 28), 3)
    with pytest.raises(ConfigError, match="no architecture 'Unett'.*Unet"):
        resolve_model("smp:Unett")
    with pytest.raises(ConfigError, match="no encoder 'resnet19'"):
        resolve_model("smp:Unet:resnet19")
    assert resolve_model("smp:FPN:resnet34").name == "smp:FPN:resnet34"


def test_smp_without_the_library_names_the_segmentation_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import raises ImportError
    with pytest.raises(MissingExtraError, match=r"segmentation-models-pytorch.*policysearch\[segmentation\]"):
        resolve_model("smp:Unet")


# ---------------------------------------------------------------------- pruning through the skips


def test_the_decoder_conv_reading_a_skip_is_a_consumer_of_both_concatenated_groups():
    model = _unet()
    groups = {g.name: g for g in channel_groups(model, _example())}
    convs = _convs(model)
    assert "head" not in groups and len(groups) == 14  # two convs per block, 7 blocks
    for level, up in (("down.0.3", "up.0.0"), ("down.1.3", "up.1.0"), ("down.2.3", "up.2.0")):
        assert dict(groups[level].consumers)[up] == groups[level].channels
    assert dict(groups["bottleneck.3"].consumers)["up.2.0"] == 128
    # Every input channel of every conv is tied to exactly one group (the image's excepted).
    reads: dict[str, int] = {}
    for g in groups.values():
        for name, count in g.consumers:
            reads[name] = reads.get(name, 0) + count
    assert {n: c.in_channels for n, c in convs.items() if n != "down.0.0"} == reads


def test_pruning_skip_channels_removes_the_matching_inputs_of_the_decoder():
    """Channels made dead (zero weights, zero batch-norm affine) are the ones a plan drops; if the pruned
    inputs of the concatenating convs were not the ones these channels feed, the output would change."""
    teacher = _unet(seed=1)
    convs = dict(teacher.named_modules())
    dead = {"down.1.3": torch.arange(0, 32, 2), "bottleneck.3": torch.arange(64, 128)}
    offsets = {"down.1.3": [("down.2.0", 0), ("up.1.0", 0)],  # cat([skip, up]): the skip comes first
               "bottleneck.3": [("up.2.0", 64)]}              # after down.2.3's 64 skip channels
    with torch.no_grad():
        for name, idx in dead.items():
            block, conv = name.rsplit(".", 1)
            convs[name].weight[idx] = 0
            convs[f"{block}.{int(conv) + 1}"].weight[idx] = 0  # the batch norm after it
            convs[f"{block}.{int(conv) + 1}"].bias[idx] = 0
            for consumer, offset in offsets[name]:
                convs[consumer].weight[:, idx + offset] = 0
    plan = CompressionPlan(ratios={"down.1.3": 0.5, "bottleneck.3": 0.5},
                           channels={"down.1.3": 32, "bottleneck.3": 128},
                           model="unet", input_shape=SHAPE, num_classes=3)
    student = plan.apply(teacher, _example()).eval()
    s = _convs(student)
    assert (s["down.1.3"].out_channels, s["down.2.0"].in_channels) == (16, 16)
    assert s["up.1.0"].in_channels == 16 + 64 and s["up.2.0"].in_channels == 64 + 64
    assert s["bottleneck.3"].out_channels == 64 and s["head"].out_channels == 3
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("shape", "outputs"), [((3, 16, 16), 4), ((1, 16, 16), 1)])  # segmentation; grey restoration
def test_a_uniform_plan_at_half_the_flops_gives_a_smaller_unet_with_the_same_outputs(shape, outputs):
    teacher = _unet(shape, outputs)
    example = _example(shape)
    plan = CompressionPlan.uniform(teacher, example, flops_target=0.5, model_name="unet")
    student = plan.apply(teacher, example)
    teacher_flops = flops_per_image(teacher, shape)["forward"]
    flops = flops_per_image(student, shape)["forward"]
    assert plan.num_classes == outputs and plan.teacher_flops == teacher_flops and plan.flops == flops
    # The FLOPs model the solver uses is exact for the skips, so the target is met to the FLOP; the
    # uniform ratio is the largest that meets it, so the student is not much smaller than asked.
    assert 0.45 * teacher_flops < flops <= 0.5 * teacher_flops
    groups = channel_groups(teacher, example)
    flops_model = FlopsModel(teacher, layer_flops(teacher, example), groups)
    kept = plan.kept()
    assert flops_model([kept[g.name] / g.channels for g in groups]) == pytest.approx(flops, rel=1e-9)
    assert count_parameters(student) < 0.6 * count_parameters(teacher)
    student.train()
    x = torch.rand(2, *shape)
    out = student(x)
    assert out.shape == (2, outputs, *shape[1:]) and student.head.out_channels == outputs
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())


def test_every_ratio_of_a_plan_is_honoured_and_the_skips_follow():
    teacher = _unet()
    groups = channel_groups(teacher, _example())
    ratios = {g.name: r for g, r in zip(groups, [0.25, 0.5, 0.75, 1.0, 0.4, 0.6, 0.3] * 2)}
    plan = CompressionPlan(ratios=ratios, channels={g.name: g.channels for g in groups}, model="unet",
                           input_shape=SHAPE, num_classes=3)
    student = plan.apply(teacher, _example())
    convs = _convs(student)
    kept = {g.name: kept_channels(g.channels, ratios[g.name]) for g in groups}
    assert {name: convs[name].out_channels for name in kept} == kept
    assert convs["up.0.0"].in_channels == kept["down.0.3"] + kept["up.1.3"]
    assert convs["up.1.0"].in_channels == kept["down.1.3"] + kept["up.2.3"]
    assert convs["up.2.0"].in_channels == kept["down.2.3"] + kept["bottleneck.3"]
    assert convs["head"].in_channels == kept["up.0.3"] and convs["head"].out_channels == 3
    assert student(torch.rand(2, *SHAPE)).shape == (2, 3, 16, 16)


def test_a_unet_plan_round_trips_json_and_reapplies_to_a_fresh_unet(tmp_path):
    teacher = _unet(seed=0)
    plan = CompressionPlan.uniform(teacher, _example(), flops_target=0.4, model_name="unet")
    student = plan.apply(teacher, _example())
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = CompressionPlan.load(path)
    assert loaded == plan and loaded.num_classes == 3
    fresh = loaded.apply(_unet(seed=7), _example())
    shapes = {k: v.shape for k, v in student.state_dict().items()}
    assert {k: v.shape for k, v in fresh.state_dict().items()} == shapes
    fresh.load_state_dict(student.state_dict())
    built = loaded.build(student.state_dict())  # by the registered name, dense by default
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(x), student.eval()(x))


# ---------------------------------------------------------------------- dense distillation


def _seg_batch(seed=0, n=2, k=4, h=6, w=5):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, k, h, w, generator=g)
    t = torch.randn(n, k, h, w, generator=g)
    masks = torch.randint(0, k, (n, h, w), generator=g)
    masks[0, :2] = IGNORE_INDEX
    return s, t, masks


def test_segmentation_kd_is_the_classification_kd_of_every_pixel():
    s, t, masks = _seg_batch()
    per_pixel = kd_loss(s.permute(0, 2, 3, 1).reshape(-1, 4), t.permute(0, 2, 3, 1).reshape(-1, 4), masks.flatten(),
                        temperature=3.0, alpha=1.0)
    loss = segmentation_kd_loss(s, t, masks, temperature=3.0, alpha=1.0)
    assert loss.shape == () and loss > 0
    torch.testing.assert_close(loss, per_pixel)
    # The hard term is the segmentation task's own loss (ignored pixels left out).
    torch.testing.assert_close(segmentation_kd_loss(s, t, masks, alpha=0.0),
                               get_task("segmentation").loss(s, masks, None))
    mixed = segmentation_kd_loss(s, t, masks, temperature=3.0, alpha=0.7)
    torch.testing.assert_close(mixed, 0.7 * loss + 0.3 * segmentation_kd_loss(s, t, masks, alpha=0.0))


def test_segmentation_kd_ignores_unlabelled_pixels_in_its_hard_term():
    s, t, masks = _seg_batch()
    changed = s.clone()
    changed[0, :, :2] += 10 * torch.randn_like(changed[0, :, :2])  # only where the mask says 255
    assert torch.equal(segmentation_kd_loss(changed, t, masks, alpha=0.0), segmentation_kd_loss(s, t, masks, alpha=0.0))
    assert not torch.equal(segmentation_kd_loss(changed, t, masks, alpha=1.0), segmentation_kd_loss(s, t, masks, 1.0))
    everything_ignored = torch.full_like(masks, IGNORE_INDEX)
    assert segmentation_kd_loss(s, t, everything_ignored, alpha=0.0) == 0.0


def test_segmentation_kd_is_zero_when_student_teacher_and_mask_agree_and_its_gradient_reaches_the_student():
    _, _, masks = _seg_batch()
    labels = masks.clamp(max=3)
    confident = 100.0 * F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert segmentation_kd_loss(confident, confident.clone(), masks, alpha=1.0) == 0.0
    assert segmentation_kd_loss(confident, confident.clone(), masks, alpha=0.5) < 1e-12
    s, t, masks = _seg_batch()
    s.requires_grad_(True)
    t.requires_grad_(True)
    segmentation_kd_loss(s, t, masks, alpha=0.5).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    with pytest.raises(ConfigError, match="expected the same"):
        segmentation_kd_loss(s, t[:, :3], masks)
    with pytest.raises(ConfigError, match="masks have shape"):
        segmentation_kd_loss(s, t, masks[:, :3])


def test_restoration_kd_mixes_the_teacher_and_the_normalised_target():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 6, 5, generator=g)  # the trainer's target: [0, 1], un-normalised
    data = SimpleNamespace(mean=torch.tensor([0.5, 0.4, 0.3]), std=torch.tensor([0.2, 0.25, 0.3]))
    normalised = (clean - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    assert restoration_kd_loss(normalised, normalised.clone(), clean, data.mean, data.std, alpha=0.5) == 0.0
    s = torch.randn(2, 3, 6, 5, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 6, 5, generator=g, requires_grad=True)
    torch.testing.assert_close(restoration_kd_loss(s, t, clean, data.mean, data.std, alpha=0.0),
                               get_task("restoration").loss(s, clean, data))
    torch.testing.assert_close(restoration_kd_loss(s, t, clean, data.mean, data.std, alpha=1.0), F.mse_loss(s, t))
    loss = restoration_kd_loss(s, t, clean, data.mean, data.std, alpha=0.9)
    assert loss.shape == ()
    loss.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None
    with pytest.raises(ConfigError, match="targets have shape"):
        restoration_kd_loss(s, t, clean[:, :1], data.mean, data.std)


def test_the_loss_table_is_keyed_by_the_tasks_target_kind():
    assert {get_task(name).target_kind for name in ("classification", "segmentation", "restoration")} == set(KD_LOSSES)
    s, t, masks = _seg_batch()
    assert torch.equal(kd_loss_for("segmentation")(s, t, masks, None, 2.0, 0.5),
                       segmentation_kd_loss(s, t, masks, 2.0, 0.5))
    logits, labels = s[:, :, 0, 0], masks[:, 3, 0]  # rows 0-1 of image 0 are ignored
    assert torch.equal(kd_loss_for(None)(logits, t[:, :, 0, 0], labels, None, 2.0, 0.5),
                       kd_loss(logits, t[:, :, 0, 0], labels, 2.0, 0.5))


def _dense_data(task: str) -> DeviceData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (48, *SHAPE), generator=g, dtype=torch.uint8)
    if task == "segmentation":
        y = (x[:, 0] > 127).to(torch.uint8)
        y[:, :2] = IGNORE_INDEX
        classes = ["dark", "bright"]
    else:
        y, classes = x.clone(), ["grey"]
        x = (x.float() + torch.randn(x.shape, generator=g) * 20).clamp(0, 255).to(torch.uint8)
    mean, std = torch.tensor([0.5]), torch.tensor([0.3])
    return DeviceData(name=f"tiny-{task}", fingerprint="test", x_train=x[:32], y_train=y[:32], x_val=x[32:40],
                      y_val=y[32:40], x_test=x[40:], y_test=y[40:], classes=classes, mean=mean, std=std,
                      split={"seed": 0, "train_size": 32, "val_size": 8, "test_size": 8}, device=torch.device("cpu"),
                      task=task)


@pytest.mark.parametrize("task", ["segmentation", "restoration"])
def test_distill_trains_a_pruned_unet_on_dense_data(task):
    data = _dense_data(task)
    teacher = build_for_data("unet", data).eval()
    plan = CompressionPlan.uniform(teacher, _example(), flops_target=0.5, model_name="unet")
    student = plan.apply(teacher, _example())
    before = {k: v.clone() for k, v in student.state_dict().items()}
    stats = distill(student, teacher, data, steps=2, lr=0.01, batch_size=8)
    assert stats.diverged is None and stats.steps == 2 and np.isfinite(stats.loss) and stats.loss > 0
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
