"""Tests for policysearch/checks.py: one message style, "NAME is VALUE, expected ...", wherever a check runs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from policysearch.checks import (
    MAX_LR,
    check_choice,
    check_int,
    check_lr,
    check_number,
    check_probability,
    check_shape,
    is_int,
    is_number,
)
from policysearch.errors import ConfigError, PolicyFormatError, UnknownNameError
from policysearch.policies.artifact import read_provenance
from policysearch.policies.augment import AugmentPolicy


def test_bool_is_neither_an_int_nor_a_number():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0)
    assert is_number(0.5) and is_number(np.float32(0.5)) and is_number(2) and not is_number(False)
    assert not is_number("1")
    with pytest.raises(ConfigError, match=r"^batch_size is True, expected an int >= 1$"):
        check_int("batch_size", True, 1)
    with pytest.raises(ConfigError, match=r"^weight is False, expected a finite number$"):
        check_number("weight", False)


def test_check_int_returns_a_python_int_within_closed_bounds():
    assert check_int("n", np.int32(4), 1, 4) == 4 and type(check_int("n", np.int32(4))) is int
    assert check_int("n", 1, 1, 4) == 1
    with pytest.raises(ConfigError, match=r"^n is 5, expected an int >= 1 and <= 4$"):
        check_int("n", 5, 1, 4)
    with pytest.raises(ConfigError, match=r"^n is 2.0, expected an int$"):
        check_int("n", 2.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_unless_nothing_else_is_checked(value):
    with pytest.raises(ConfigError, match=rf"^cost_weight is {value!r}, expected a finite number >= 0$"):
        check_number("cost_weight", value, 0.0)
    with pytest.raises(ConfigError, match="expected a finite number"):
        check_number("x", value)  # finite is the default, with no bound at all


def test_open_and_closed_bounds():
    assert check_number("p", 0, 0.0, 1.0) == 0.0 and check_number("p", 1, 0.0, 1.0) == 1.0
    assert isinstance(check_number("p", 1, 0.0, 1.0), float)
    with pytest.raises(ConfigError, match=r"^lr is 0.0, expected a finite number > 0$"):
        check_number("lr", 0.0, 0.0, low_open=True)
    with pytest.raises(ConfigError, match=r"^smoothing is 1.0, expected a finite number >= 0 and < 1$"):
        check_number("smoothing", 1.0, 0.0, 1.0, high_open=True)
    assert check_number("smoothing", 0.999, 0.0, 1.0, high_open=True) == 0.999
    with pytest.raises(ConfigError, match=r"^flip is 1.5, expected a finite number >= 0 and <= 1$"):
        check_probability("flip", 1.5)


def test_check_lr_is_positive_finite_and_at_most_max_lr():
    assert check_lr("lr", MAX_LR) == MAX_LR and check_lr("lr", 1e-12) == 1e-12
    for bad in (0, -0.1, MAX_LR * 1.001, math.inf, math.nan, True, "0.1"):
        with pytest.raises(ConfigError, match=rf"^lr is {bad!r}, expected a finite number > 0 and <= 1000$"):
            check_lr("lr", bad)


def test_the_error_class_is_passed_through():
    source = "plan.json: field 'ratios[0]'"
    with pytest.raises(PolicyFormatError, match=r"^plan.json: field 'ratios\[0\]' is nan, expected a finite number"):
        check_number(source, math.nan, error=PolicyFormatError)
    with pytest.raises(PolicyFormatError, match=r"field 'n' is True"):
        check_int("field 'n'", True, error=PolicyFormatError)
    with pytest.raises(PolicyFormatError, match=r"is 2, expected a finite number >= 0 and <= 1"):
        check_probability("p", 2, error=PolicyFormatError)
    with pytest.raises(PolicyFormatError, match=r"^shape is \[3, 0, 8\], expected three positive ints \(C, H, W\)$"):
        check_shape("shape", [3, 0, 8], error=PolicyFormatError)


def test_check_shape():
    assert check_shape("input_shape", [1, np.int64(8), 8]) == (1, 8, 8)
    assert check_shape("input_shape", (10,), ndim=None) == (10,)
    for bad in ((1, 8), (1, 8, True), "188", (), None):
        with pytest.raises(ConfigError, match="input_shape is .*, expected three positive ints"):
            check_shape("input_shape", bad)
    with pytest.raises(ConfigError, match=r"expected positive ints, e.g. \(3, 32, 32\)"):
        check_shape("input_shape", (), ndim=None)


def test_check_choice_suggests_close_names():
    assert check_choice("reward metric", "neg_nll", ("accuracy", "neg_nll")) == "neg_nll"
    with pytest.raises(UnknownNameError, match="unknown reward metric 'acuracy'. Did you mean 'accuracy'?") as info:
        check_choice("reward metric", "acuracy", ("accuracy", "neg_nll"))
    assert info.value.known == ["accuracy", "neg_nll"]
    with pytest.raises(UnknownNameError, match="unknown mode '3'"):
        check_choice("mode", 3, ("schedule", "static"))
    # A loader names the field and keeps its own error class, with the same suggestion.
    with pytest.raises(PolicyFormatError, match=r"^c.json: field 'algo' is 'ppo2', expected one of ppo, sac. "
                                                r"Did you mean 'ppo'\?$"):
        check_choice("c.json: field 'algo'", "ppo2", ("ppo", "sac"), error=PolicyFormatError)


def test_read_provenance():
    assert read_provenance({}, "a.json") == {} and read_provenance({"provenance": None}, "a.json") == {}
    assert read_provenance({"provenance": {"seed": 1}}, "a.json") == {"seed": 1}
    with pytest.raises(PolicyFormatError, match=r"^a.json: field 'provenance' is \[1\], expected an object$"):
        read_provenance({"provenance": [1]}, "a.json")


@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, 1e308])
@pytest.mark.parametrize("field", ["mixup", "cutmix"])
def test_a_policy_with_a_bad_mix_alpha_is_refused_naming_the_field(field, value):
    data = AugmentPolicy(name="p").to_dict()
    data[field] = {"p": 0.5, "alpha": value}  # what a file holding Infinity / NaN would decode to
    message = rf"{field}\.alpha is {re.escape(repr(value))}, expected a finite number > 0 and <= 100$"
    with pytest.raises(PolicyFormatError, match=rf"^p.json: {message}"):
        AugmentPolicy.from_dict(data, "p.json")
    with pytest.raises(ConfigError, match=rf"^{message}"):
        AugmentPolicy(**{field: (0.5, value)})
    with pytest.raises(ConfigError, match=rf"^{field} is \(0.5,\), expected \(probability, alpha\)$"):
        AugmentPolicy(**{field: (0.5,)})


def test_a_policy_with_a_bad_provenance_is_refused():
    data = {**AugmentPolicy(name="p").to_dict(), "provenance": "yesterday"}
    with pytest.raises(PolicyFormatError, match="field 'provenance' is 'yesterday', expected an object"):
        AugmentPolicy.from_dict(data, "p.json")
