import json

import pytest
import torch

from policysearch.errors import ConfigError, PolicyFormatError, UnknownNameError
from policysearch.policies.augment import (
    BUILTIN_POLICIES,
    NUM_BINS,
    OP_NAMES,
    OPS,
    AugmentPolicy,
    builtin_policy,
    load_policy,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", BUILTIN_POLICIES)
def test_builtins_round_trip_and_load_in_kornia(name, tmp_path):
    from kornia.augmentation.auto import AutoAugment

    policy = builtin_policy(name)
    path = policy.save(tmp_path / f"{name}.json")
    again = AugmentPolicy.load(path)
    assert again.to_dict() == policy.to_dict()
    raw = json.loads(path.read_text())
    assert raw["kind"] == "augment_policy" and raw["format_version"] == 1
    assert "torch" in raw["provenance"] or raw["provenance"] == {}
    if raw["sub_policies"]:
        # The exported list goes into kornia unchanged.
        out = AutoAugment(policy=raw["sub_policies"])(torch.rand(4, 3, 16, 16))
        assert out.shape == (4, 3, 16, 16)


@pytest.mark.parametrize("name", BUILTIN_POLICIES)
def test_builtins_keep_range_and_shape(name, batch):
    x, y = batch
    out, target = builtin_policy(name)(x, y, 10, generator=gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.allclose(target.sum(1), torch.ones(len(y)))


@pytest.mark.parametrize("op", OP_NAMES)
def test_every_op_changes_images_and_stays_in_range(op, batch):
    x, y = batch
    mag = None if OPS[op].standard is None else NUM_BINS - 1
    policy = AugmentPolicy([[(op, 1.0, mag)]])
    out, _ = policy(x, y, 10, generator=gen())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x), f"{op} at full strength left the batch unchanged"


def test_zero_probability_is_identity(batch):
    x, y = batch
    out, target = AugmentPolicy([[("rotate", 0.0, 9), ("invert", 0.0, None)]])(x, y, 10, generator=gen())
    assert torch.equal(out, x)
    assert torch.equal(target.argmax(1), y)


def test_subpolicy_is_drawn_per_sample():
    # Two sub-policies with opposite effects: invert or keep. A per-batch draw would give all-or-nothing.
    x = torch.full((256, 1, 4, 4), 0.2)
    policy = AugmentPolicy([[("invert", 1.0, None)], []])
    out, _ = policy(x, torch.zeros(256, dtype=torch.long), 2, generator=gen())
    inverted = (out[:, 0, 0, 0] > 0.5).float().mean()
    assert 0.3 < float(inverted) < 0.7
    assert policy.last_subpolicy is not None and len(policy.last_subpolicy.unique()) == 2
    # and the record says which sample got which sub-policy
    assert torch.equal(policy.last_subpolicy == 0, out[:, 0, 0, 0] > 0.5)


def test_same_generator_seed_replays(batch):
    x, y = batch
    policy = builtin_policy("trivial")
    a, _ = policy(x, y, 10, generator=gen(3))
    b, _ = policy(x, y, 10, generator=gen(3))
    c, _ = policy(x, y, 10, generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("mix", [{"mixup": (1.0, 0.4)}, {"cutmix": (1.0, 1.0)}])
def test_mix_targets_are_soft_and_sum_to_one(mix, batch):
    x, y = batch
    out, target = AugmentPolicy(**mix)(x, y, 10, generator=gen())
    assert torch.allclose(target.sum(1), torch.ones(len(y)), atol=1e-6)
    assert float(target.max(1).values.min()) < 1.0  # really mixed
    assert not torch.equal(out, x)


def test_cutmix_target_matches_pasted_area():
    x = torch.zeros(2, 1, 16, 16)
    x[1] = 1.0
    y = torch.tensor([0, 1])
    out, target = AugmentPolicy(cutmix=(1.0, 1.0))(x, y, 2, generator=gen(1))
    pasted = float(out[0].mean())  # sample 0 got a box of ones from sample 1
    assert target[0, 1].item() == pytest.approx(pasted, abs=1e-6)


def test_crop_shift_is_pad_and_crop():
    x = torch.ones(32, 1, 16, 16)
    out, _ = AugmentPolicy(crop=0.125)(x, torch.zeros(32, dtype=torch.long), 2, generator=gen())
    shifted = (out == 0).flatten(1).any(1)
    assert shifted.any()  # zero padding came in for some samples
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # integer shifts, no interpolation


def test_schedule_selects_piece_by_progress(batch):
    x, y = batch
    policy = AugmentPolicy(schedule=[(0.0, AugmentPolicy()), (0.5, AugmentPolicy([[("invert", 1.0, None)]]))])
    early, _ = policy(x, y, 10, progress=0.2, generator=gen())
    late, _ = policy(x, y, 10, progress=0.7, generator=gen())
    assert torch.equal(early, x)
    assert torch.allclose(late, 1 - x)
    again = AugmentPolicy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again.to_dict() == policy.to_dict() and again.starts == (0.0, 0.5)


def test_bad_policies_raise_clear_errors():
    with pytest.raises(UnknownNameError, match="Did you mean 'rotate'"):
        AugmentPolicy([[("rotat", 0.5, 3)]])
    with pytest.raises(ConfigError, match=r"probability is 1.5, expected a finite number >= 0 and <= 1"):
        AugmentPolicy([[("rotate", 1.5, 3)]])
    with pytest.raises(ConfigError, match=r"magnitude bin is 10, expected an int >= 0 and <= 9"):
        AugmentPolicy([[("rotate", 0.5, 10)]])
    with pytest.raises(ConfigError, match="exclusive"):
        AugmentPolicy(mixup=(0.7, 1.0), cutmix=(0.7, 1.0))
    with pytest.raises(UnknownNameError, match="Did you mean 'trivial'"):
        load_policy("trivia")


def test_corrupt_policy_files(tmp_path):
    good = builtin_policy("randaugment").to_dict()
    cases = {
        "notjson.json": "{not json",
        "kind.json": json.dumps({**good, "kind": "lr_schedule"}),
        "version.json": json.dumps({**good, "format_version": 99}),
        "missing.json": json.dumps({k: v for k, v in good.items() if k != "crop"}),
        "badop.json": json.dumps({**good, "sub_policies": [[["warp", 0.5, 1]]]}),
        "badtype.json": json.dumps({**good, "flip": "yes"}),
    }
    expected = {"notjson.json": "not valid JSON", "kind.json": "'kind'", "version.json": "format_version",
                "missing.json": "'crop'", "badop.json": "warp", "badtype.json": "'flip'"}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(PolicyFormatError, match=expected[name]):
            AugmentPolicy.load(path)


def test_trivial_draws_ops_uniformly():
    policy = builtin_policy("trivial")
    ops = [sub[0][0] if sub else "identity" for sub in policy.sub_policies]
    counts = {op: ops.count(op) for op in set(ops)}
    assert len(set(counts.values())) == 1  # every op (and identity) equally likely
    assert "invert" not in counts and len(counts) == 14


def test_zoo_policies_load_with_provenance_and_results():
    from pathlib import Path

    import policysearch.policies as policies

    zoo = sorted((Path(policies.__file__).parent / "zoo").glob("*.json"))
    assert zoo, "policies/zoo/ ships no policy"
    for path in zoo:
        policy = AugmentPolicy.load(path)
        prov = policy.provenance
        assert len(prov["dataset_fingerprint"]) == 64 and prov["env_id"] == "policysearch/Augment-v0"
        assert 0.0 < prov["measured"]["test_accuracy"]["mean"] <= 1.0
        out, target = policy(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long), 10, progress=0.6,
                             generator=gen())
        assert out.shape == (8, 1, 28, 28) and torch.allclose(target.sum(1), torch.ones(8))
