"""The augmentation ops table: every op runs batched, keeps shape / dtype / range, replays for a seed,
and two ops match a reference built here from torch / kornia primitives."""

import pytest
import torch

from policysearch.errors import PolicyInputError
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


# ---------------------------------------------------------------------- random erasing (a base op, not in the table)
def _erased(out: torch.Tensor) -> torch.Tensor:
    """Per-sample erased fraction of a batch of ones (the box is filled with 0)."""
    return (out == 0).flatten(1).float().mean(1)


@pytest.mark.parametrize(("scale", "ratio"), [((0.02, 0.33), (0.3, 3.3)), ((0.1, 0.2), (0.5, 0.8))])
def test_erasing_area_stays_in_the_scale_range_as_one_box(scale, ratio):
    from policysearch.policies import ops

    h, w = 28, 20
    x = torch.ones(3000, 2, h, w)
    out = ops.random_erasing(x, 1.0, scale, ratio, torch.Generator().manual_seed(0))
    fraction = _erased(out)
    slack = (0.5 * (h + w) + 0.25) / (h * w)  # sides are rounded to whole pixels, as kornia does
    assert float(fraction.min()) >= max(scale[0] - slack, 1 / (h * w))
    assert float(fraction.max()) <= scale[1] + slack
    mask = out[:, 0] == 0
    assert torch.equal(mask, out[:, 1] == 0)  # the same box in every channel
    rows, cols = mask.any(2).sum(1), mask.any(1).sum(1)
    assert torch.equal(rows * cols, mask.sum((1, 2)))  # one solid rectangle per sample
    aspect = rows.float() / cols.float()
    tall = ratio[1] * (1 + 2 / cols.float()) + 1e-6  # the rounding again
    assert bool((aspect <= tall).all())


@pytest.mark.parametrize(("scale", "ratio"), [((0.02, 0.33), (0.3, 3.3)), ((0.1, 0.2), (0.5, 0.8))])
def test_erasing_matches_kornia_random_erasing_statistically(scale, ratio):
    """kornia draws from the global RNG (no generator per call), so the kernel is ours; the erased
    area and the box's shape must follow the same distribution as kornia's RandomErasing."""
    from kornia.augmentation import RandomErasing

    from policysearch.policies import ops

    x = torch.ones(4000, 1, 28, 28)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = RandomErasing(scale=scale, ratio=ratio, value=0.0, p=1.0)(x)
    ours = ops.random_erasing(x, 1.0, scale, ratio, torch.Generator().manual_seed(1))
    a, b = _erased(ours), _erased(theirs)
    assert abs(float(a.mean()) - float(b.mean())) < 0.01
    q = torch.linspace(0.1, 0.9, 9)
    assert float((a.quantile(q) - b.quantile(q)).abs().max()) < 0.02

    def log_aspect(out):
        mask = out[:, 0] == 0
        return (mask.any(2).sum(1).float() / mask.any(1).sum(1).float()).log()

    assert abs(float(log_aspect(ours).mean()) - float(log_aspect(theirs).mean())) < 0.05
    assert abs(float(log_aspect(ours).std()) - float(log_aspect(theirs).std())) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_erasing_keeps_shape_dtype_range_replays_and_is_identity_at_zero(dtype):
    from policysearch.policies import ops

    x = images((64, 3, 12, 12)).to(dtype)
    args = ((0.02, 0.33), (0.3, 3.3))
    a = ops.random_erasing(x, 0.7, *args, torch.Generator().manual_seed(5))
    b = ops.random_erasing(x, 0.7, *args, torch.Generator().manual_seed(5))
    c = ops.random_erasing(x, 0.7, *args, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == dtype and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(ops.random_erasing(x, 0.0, *args, torch.Generator().manual_seed(5)), x)
    touched = (a != x).flatten(1).any(1).float().mean()
    assert 0.5 < float(touched) < 0.9  # p = 0.7 per sample
    y = torch.zeros(64, dtype=torch.long)
    policy = AugmentPolicy(erasing=0.0)
    if dtype == torch.float32:
        assert policy.is_identity and torch.equal(policy(x, y, 2, generator=torch.Generator())[0], x)
    else:  # the policy module takes the float32 batches a training loop feeds a model, and says so
        with pytest.raises(PolicyInputError, match="float32 images in \\[0, 1\\], got torch.float64"):
            policy(x, y, 2, generator=torch.Generator())
    if dtype == torch.float32:
        out, _ = AugmentPolicy(erasing=0.7)(x, y, 2, generator=torch.Generator().manual_seed(5))
        assert torch.equal(out, a)  # the policy is the kernel, drawn from the same generator
