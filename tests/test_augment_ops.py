"""The augmentation ops table: every op runs batched, keeps shape / dtype / range, replays for a seed,
and two ops match a reference built here from torch / kornia primitives."""

import pytest
import torch

from policysearch.policies.augment import NUM_BINS, OP_NAMES, OPS, AugmentPolicy, apply_ops


def images(shape=(12, 3, 16, 16), seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def op_index(name):
    return torch.full((12,), OP_NAMES.index(name), dtype=torch.long)


def test_translate_x_matches_kornia_translate():
    from kornia.geometry.transform import translate

    x = images()
    m = torch.linspace(-0.5, 0.5, 12)
    w = x.shape[-1]
    expected = translate(x, torch.stack([m * w, torch.zeros(12)], dim=1), align_corners=True)
    assert torch.allclose(apply_ops(x, op_index("translate_x"), m), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("solarize", lambda x, f: torch.where(x >= f, 1.0 - x, x)),
        ("brightness", lambda x, f: (x * f).clamp(0.0, 1.0)),
        ("posterize", lambda x, f: torch.floor(x * 255.0 / 2.0 ** (8 - f.round())) * 2.0 ** (8 - f.round()) / 255.0),
        ("invert", lambda x, f: 1.0 - x),
    ],
)
def test_colour_ops_match_their_definition(name, reference):
    x = images()
    m = torch.linspace(*(OPS[name].standard or (0.0, 1.0)), 12)
    expected = reference(x, m[:, None, None, None])
    assert torch.allclose(apply_ops(x, op_index(name), m), expected, atol=1e-6)


def test_minus_one_leaves_samples_untouched_and_ops_act_per_sample():
    x = images()
    op = torch.tensor([-1, OP_NAMES.index("invert"), -1, OP_NAMES.index("rotate")] * 3)
    m = torch.full((12,), 20.0)
    out = apply_ops(x, op, m)
    keep = op == -1
    assert torch.equal(out[keep], x[keep])
    assert torch.allclose(out[1::4], 1.0 - x[1::4])
    # a mixed batch gives each sample what it gives that sample alone
    for i in range(12):
        assert torch.allclose(out[i : i + 1], apply_ops(x[i : i + 1], op[i : i + 1], m[i : i + 1]), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", OP_NAMES)
def test_every_op_keeps_shape_dtype_range_and_replays(op, channels):
    x = images((16, channels, 12, 12))
    y = torch.zeros(16, dtype=torch.long)
    for scale in ("standard", "wide"):
        for mag in ([None] if OPS[op].standard is None else [0, NUM_BINS // 2, NUM_BINS - 1]):
            policy = AugmentPolicy([[(op, 0.8, mag)]], magnitude_scale=scale)
            a, _ = policy(x, y, 2, generator=torch.Generator().manual_seed(5))
            b, _ = policy(x, y, 2, generator=torch.Generator().manual_seed(5))
            assert a.shape == x.shape and a.dtype == x.dtype
            assert bool(torch.isfinite(a).all()) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
            assert torch.equal(a, b), f"{op} (bin {mag}, {scale}) does not replay for a seeded generator"
