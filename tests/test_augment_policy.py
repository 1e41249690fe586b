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
    # Version 2 only where a version 1 reader would drop a field: erasing.
    assert raw["kind"] == "augment_policy" and raw["format_version"] == (2 if policy.erasing else 1)
    assert ("erasing" in raw) == bool(policy.erasing)
    assert "torch" in raw["provenance"] or raw["provenance"] == {}
    if raw["sub_policies"]:
        # The exported list goes into kornia unchanged.
        out = AutoAugment(policy=raw["sub_policies"])(torch.rand(4, 3, 16, 16))
        assert out.shape == (4, 3, 16, 16)
    for subs in (again.kornia_policy(), again.kornia_policy(phase=0)):
        assert subs and AutoAugment(policy=subs)(torch.rand(4, 3, 16, 16)).shape == (4, 3, 16, 16)


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

    zoo = sorted(p for p in (Path(policies.__file__).parent / "zoo").glob("*.json")
                 if json.loads(p.read_text()).get("kind") == AugmentPolicy.KIND)  # not the LR controllers
    assert zoo, "policies/zoo/ ships no policy"
    for path in zoo:
        policy = AugmentPolicy.load(path)
        prov = policy.provenance
        assert len(prov["dataset_fingerprint"]) == 64 and prov["env_id"].startswith("policysearch/Augment-v")
        assert 0.0 < prov["measured"]["test_accuracy"]["mean"] <= 1.0
        out, target = policy(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long), 10, progress=0.6,
                             generator=gen())
        assert out.shape == (8, 1, 28, 28) and torch.allclose(target.sum(1), torch.ones(8))


# ---------------------------------------------------------------------- random erasing in a policy
def test_erasing_builtins_follow_the_fashion_mnist_recipe(batch):
    from policysearch.policies.augment import ERASING_RATIO, ERASING_SCALE

    for name, crop in (("erasing", 0.0), ("cropflip-erasing", 0.125)):
        policy = builtin_policy(name)
        assert (policy.erasing, policy.erasing_scale, policy.erasing_ratio) == (0.5, (0.02, 0.33), (0.3, 3.3))
        assert policy.crop == crop and not policy.sub_policies and not policy.is_identity
    assert (ERASING_SCALE, ERASING_RATIO) == ((0.02, 0.33), (0.3, 3.3))
    x = torch.ones(512, 1, 16, 16)
    out, target = builtin_policy("erasing")(x, torch.zeros(512, dtype=torch.long), 2, generator=gen())
    erased = (out == 0).flatten(1).any(1).float().mean()
    assert 0.4 < float(erased) < 0.6  # p = 0.5, per sample
    assert torch.equal(target[:, 0], torch.ones(512))  # erasing keeps hard targets


def test_erasing_runs_after_the_subpolicies_and_before_mixing():
    # An inverted image erased afterwards has zeros in the box; erased first, the box would read 1.
    x = torch.full((64, 1, 8, 8), 0.25)
    out, _ = AugmentPolicy([[("invert", 1.0, None)]], erasing=1.0)(x, torch.zeros(64, dtype=torch.long), 2,
                                                                     generator=gen())
    assert set(out.unique().tolist()) == {0.0, 0.75}


def test_policy_without_erasing_draws_as_before(batch):
    # Erasing off draws nothing from the generator: existing policies replay exactly as before.
    x, y = batch
    plain = AugmentPolicy(crop=0.125, flip=0.5, mixup=(0.5, 1.0))
    with_field = AugmentPolicy(crop=0.125, flip=0.5, mixup=(0.5, 1.0), erasing=0.0, erasing_scale=(0.1, 0.2))
    a, ta = plain(x, y, 10, generator=gen(2))
    b, tb = with_field(x, y, 10, generator=gen(2))
    assert torch.equal(a, b) and torch.equal(ta, tb)


def test_version_1_files_load_unchanged(tmp_path):
    from pathlib import Path

    import policysearch.policies as policies

    # The zoo file was written by a version 1 writer (before erasing existed).
    zoo = Path(policies.__file__).parent / "zoo" / "fashion-mnist-cnn-ppo.json"
    raw = json.loads(zoo.read_text())
    assert raw["format_version"] == 1 and "erasing" not in raw
    policy = AugmentPolicy.load(zoo)
    assert all(p.erasing == 0.0 for p in (policy, *policy.phases))
    assert policy.to_dict() == raw  # read and written back: the same version 1 file
    old = {"kind": "augment_policy", "format_version": 1, "name": "mine", "sub_policies": [[["rotate", 0.5, 3]]],
           "magnitude_scale": "standard", "crop": 0.1, "flip": 0.5, "mixup": {"p": 0.0, "alpha": 1.0},
           "cutmix": {"p": 0.2, "alpha": 1.0}, "schedule": None, "provenance": {}}
    assert AugmentPolicy.from_dict(old).to_dict() == old


def test_erasing_file_fields_and_errors(tmp_path):
    good = builtin_policy("cropflip-erasing").to_dict()
    assert good["format_version"] == 2
    assert good["erasing"] == {"p": 0.5, "scale": [0.02, 0.33], "ratio": [0.3, 3.3]}
    short = AugmentPolicy.from_dict({**good, "erasing": {"p": 0.25}})  # scale and ratio default
    assert (short.erasing, short.erasing_scale, short.erasing_ratio) == (0.25, (0.02, 0.33), (0.3, 3.3))
    assert AugmentPolicy.from_dict({**good, "erasing": None}).erasing == 0.0
    cases = {
        "scale": ({**good, "erasing": {"p": 0.5, "scale": [0.5, 0.1]}}, "erasing.scale high is 0.1"),
        "big": ({**good, "erasing": {"p": 0.5, "scale": [0.1, 1.5]}}, "erasing.scale high"),
        "p": ({**good, "erasing": {"p": 2}}, "erasing.p is 2.0"),
        "type": ({**good, "erasing": 0.5}, "'erasing'"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(PolicyFormatError, match=message):
            AugmentPolicy.load(path)
    with pytest.raises(ConfigError, match="erasing.ratio low is 0.0"):
        AugmentPolicy(erasing=0.5, erasing_ratio=(0.0, 2.0))


def test_schedule_with_erasing_in_one_piece_round_trips(tmp_path):
    policy = AugmentPolicy(schedule=[(0.0, AugmentPolicy(flip=0.5)), (0.5, AugmentPolicy(erasing=0.3))])
    data = policy.to_dict()
    assert data["format_version"] == 2
    assert data["schedule"][0]["policy"]["erasing"]["p"] == 0.0 and data["schedule"][1]["policy"]["erasing"]["p"] == 0.3
    again = AugmentPolicy.load(policy.save(tmp_path / "p.json"))
    assert again.to_dict() == data and "erasing p=0.3" in again.describe()


# ---------------------------------------------------------------------- kornia export
def _kornia_applies(subs):
    from kornia.augmentation.auto import AutoAugment

    assert isinstance(subs, list) and subs, "kornia needs at least one sub-policy"
    x = torch.rand(6, 3, 16, 16)
    out = AutoAugment(policy=subs)(x)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


def _file_shapes():
    """A policy file of every shape a user meets: built-ins, a static export, a schedule export
    (with an identity phase), both spaces of Augment-v1, a policy without any op."""
    import numpy as np

    from policysearch.envs.augment_space import FullSpace, SmallSpace

    full, small = FullSpace(), SmallSpace()
    rng = np.random.default_rng(0)
    static = full.policy(full.decode(rng.uniform(-1, 1, full.dim)))
    small_static = small.policy(small.decode(np.array([1.0, 0.2, 0.5, 0.3, 0.4])))
    schedule = AugmentPolicy(schedule=[
        (0.0, full.policy(full.decode(np.zeros(full.dim)), name="segment-0")),  # identity
        (0.25, full.policy(full.decode(rng.uniform(-1, 1, full.dim)), name="segment-1")),
        (0.5, small.policy(small.decode(np.array([-1.0, 0.9, 0.7, 0.0, 0.0])), name="segment-2")),
        (0.75, small_static)], name="learned")
    shapes = {f"builtin-{name}": builtin_policy(name) for name in BUILTIN_POLICIES}
    shapes.update(static=static, small=small_static, schedule=schedule, none=AugmentPolicy())
    return shapes


@pytest.mark.parametrize("shape", sorted(_file_shapes()))
def test_every_policy_file_loads_into_kornia_per_phase_and_flattened(shape, tmp_path):
    policy = AugmentPolicy.load(_file_shapes()[shape].save(tmp_path / "policy.json"))
    for i in range(len(policy.phases)):
        subs = policy.kornia_policy(phase=i)
        assert subs == ([[tuple(e) for e in sub] for sub in policy.phases[i].sub_policies] or [[]])
        _kornia_applies(subs)
    _kornia_applies(policy.kornia_policy())
    # and from the raw JSON, the lists as a loop without policysearch would read them
    raw = json.loads((tmp_path / "policy.json").read_text())
    for body in [raw] if not raw["schedule"] else [piece["policy"] for piece in raw["schedule"]]:
        if body["sub_policies"]:
            _kornia_applies(body["sub_policies"])


def test_flattened_kornia_policy_weights_phases_by_their_share_of_training():
    a, b = [("invert", 0.5, None)], [("rotate", 1.0, 3)]
    two_subs = AugmentPolicy([a, [("equalize", 1.0, None)]])
    one_sub = AugmentPolicy([b])
    # Phase 0 lasts half the run with 2 sub-policies, phase 1 half with 1: b must weigh as much as both.
    flat = AugmentPolicy(schedule=[(0.0, two_subs), (0.5, one_sub)]).kornia_policy()
    assert sorted(flat) == sorted([a, [("equalize", 1.0, None)], b, b])
    # A quarter then three quarters, one sub-policy each (the first an identity phase): 1 to 3.
    flat = AugmentPolicy(schedule=[(0.0, AugmentPolicy()), (0.25, one_sub)]).kornia_policy()
    assert flat.count([]) == 1 and flat.count(b) == 3
    assert AugmentPolicy().kornia_policy() == [[]]
    assert AugmentPolicy(crop=0.1, erasing=0.5).kornia_policy(phase=0) == [[]]
    assert two_subs.kornia_subpolicies() == two_subs.kornia_policy()


def test_kornia_policy_refuses_a_phase_it_does_not_have():
    policy = AugmentPolicy(schedule=[(0.0, AugmentPolicy()), (0.5, AugmentPolicy(flip=0.5))])
    with pytest.raises(ConfigError, match=r"phase \(the policy has 2\) is 2, expected an int >= 0 and <= 1"):
        policy.kornia_policy(phase=2)
    with pytest.raises(ConfigError, match="phase"):
        AugmentPolicy().kornia_policy(phase=1)


def test_kornia_example_runs_on_a_schedule_file(tmp_path, capsys):
    import runpy
    from pathlib import Path

    path = _file_shapes()["schedule"].save(tmp_path / "policy.json")
    example = Path(__file__).parents[1] / "examples" / "kornia_autoaugment.py"
    runpy.run_path(str(example), run_name="example")["main"](str(path))
    out = capsys.readouterr().out
    assert out.count("phase ") == 4 and "flattened:" in out
