"""The export decision on held-out validation images (policysearch.protocol.selection): per-image rows that
add up to each task's metric, the split the search never scores, the bootstrap over images, and a choice
that follows the held-out images rather than the validation mean the search climbed on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dense_helpers import squares

from policysearch.errors import ConfigError
from policysearch.models import build_for_data
from policysearch.protocol.core import Arm, choose_on_validation, verdict_line
from policysearch.protocol.selection import hold_out, image_bootstrap
from policysearch.tasks import get_task
from policysearch.train.evaluate import evaluate, image_stats


@pytest.mark.parametrize("task", ["classification", "segmentation", "restoration"])
def test_the_per_image_rows_add_up_to_the_tasks_metric(task, digits):
    data = digits if task == "classification" else squares(task, 60, 16, 40, 20)
    torch.manual_seed(0)
    model = build_for_data("mlp" if task == "classification" else "unet", data)
    rows = image_stats(model, data, "val", batch_size=7)  # batches that do not divide the split
    metric = get_task(task).default_metric
    assert rows.shape[0] == len(data.y_val) and rows.dtype == torch.float64
    whole = float(get_task(task).score_from_stats(rows.sum(0), len(rows)))
    assert whole == pytest.approx(evaluate(model, data, "val")[metric], rel=1e-6, abs=1e-9)
    # Any subset of images scores as the metric over those images alone.
    part = type(data)(**{**data.__dict__, "x_val": data.x_val[:9], "y_val": data.y_val[:9]})
    assert float(get_task(task).score_from_stats(rows[:9].sum(0), 9)) == pytest.approx(
        evaluate(model, part, "val")[metric], rel=1e-6, abs=1e-9)


def test_the_held_out_part_is_disjoint_stratified_and_recorded(digits):
    searched, held = hold_out(digits, 0.5, 7)
    assert len(searched.y_val) + len(held.y_val) == len(digits.y_val) == 100
    assert len(held.y_val) == 50 and searched.split["held_out"] == held.split["held_out"] == 50
    # Disjoint and complete: the two parts' images are the validation images, each once.
    def images(part):
        return [(*x.flatten().tolist(), int(y)) for x, y in zip(part.x_val, part.y_val)]

    a, b = images(searched), images(held)
    assert sorted(a + b) == sorted(images(digits)) and not set(a) & set(b)
    # Stratified: each class within one image of half its validation count.
    for c in range(10):
        assert abs(int((held.y_val == c).sum()) * 2 - int((digits.y_val == c).sum())) <= 2
    assert searched.x_train is digits.x_train and held.x_test is digits.x_test
    assert searched.split != digits.split  # a ledger never mixes runs scored on different images
    again, _ = hold_out(digits, 0.5, 7)
    assert torch.equal(again.y_val, searched.y_val)
    with pytest.raises(ConfigError, match="expected a number in"):
        hold_out(digits, 1.0, 0)


def test_the_bootstrap_over_images_resolves_a_real_lead_and_not_noise():
    rng = np.random.default_rng(0)
    base = (rng.random((200, 1)) < 0.8).astype(float)
    same = image_bootstrap("classification", base, base)
    assert same["mean"] == 0 and same["low"] <= 0 <= same["high"] and same["images"] == 200
    better = base.copy()
    better[np.flatnonzero(base[:, 0] == 0)[:20]] = 1.0  # 20 more images right, none fewer
    lead = image_bootstrap("classification", better, base)
    assert lead["mean"] == pytest.approx(0.10) and lead["low"] > 0
    worse = image_bootstrap("classification", base, better)
    assert worse["high"] < 0
    # A swap of as many wrongs as rights is no lead.
    swapped = better.copy()
    swapped[np.flatnonzero(base[:, 0] == 1)[:20]] = 0.0
    tie = image_bootstrap("classification", swapped, base)
    assert tie["mean"] == pytest.approx(0.0) and tie["low"] < 0 < tie["high"]
    with pytest.raises(ConfigError, match="same"):
        image_bootstrap("classification", base, base[:10])


class _Ledger:
    """Stands in for `Ledger`: fixed validation scores and held-out rows per arm."""

    def __init__(self, data, held, val, rows):
        self.data, self.held, self.val, self.rows = data, held, val, rows

    def run(self, jobs, phase):
        return [{"arm": j.arm, "seed": j.seed, "diverged": None, "val": {"accuracy": self.val[j.arm]},
                 "held_out": self.rows[j.arm]} for j in jobs]


def test_the_held_out_images_decide_between_the_best_searched_and_the_best_baseline(digits):
    searched, held = hold_out(digits, 0.5, 0)
    arms = [Arm("learned #1", None, None, True, "a"), Arm("learned #2", None, None, True, "b"),
            Arm("none", None, None, False, "n"), Arm("erasing", None, None, False, "e")]
    right = [[1.0]] * 45 + [[0.0]] * 5
    worse = [[1.0]] * 35 + [[0.0]] * 15
    # The search's favourite leads on validation by a hair but is worse on the images it never saw: keep erasing.
    val = {"learned #1": 0.91, "learned #2": 0.80, "none": 0.85, "erasing": 0.90}
    ledger = _Ledger(searched, held, val, {"learned #1": worse, "learned #2": right, "none": worse, "erasing": right})
    chosen, rows, decision = choose_on_validation(ledger, arms, 1, 0, "accuracy")
    assert chosen.label == "erasing" and decision["searched"] == "learned #1" and decision["baseline"] == "erasing"
    assert decision["difference"]["mean"] == pytest.approx(-20.0) and decision["exported"] == "erasing"
    assert [r["chosen"] for r in rows] == [False, False, False, True]
    line = verdict_line(chosen, None, rows, decision)["line"]
    assert line.startswith("keep erasing: the search's best candidate did not beat it (its lead over erasing on "
                           "the 50 held-out validation images was -20.00")
    # Clearly better on the held-out images: exported.
    ledger.rows = {"learned #1": right, "learned #2": worse, "none": worse, "erasing": worse}
    chosen, rows, decision = choose_on_validation(ledger, arms, 1, 0, "accuracy")
    assert chosen.label == "learned #1" and decision["difference"]["low"] > 0
    # Without held-out images the validation mean alone decides (the protocol before it).
    ledger.held = None
    chosen, _, decision = choose_on_validation(ledger, arms, 1, 0, "accuracy")
    assert chosen.label == "learned #1" and decision is None


class _SeededLedger(_Ledger):
    """Held-out rows per (arm, seed); records which jobs ran in which phase."""

    def __init__(self, data, held, val, rows):
        super().__init__(data, held, val, rows)
        self.phases = []

    def run(self, jobs, phase):
        self.phases.append((phase, [(j.arm, j.seed) for j in jobs]))
        return [{"arm": j.arm, "seed": j.seed, "diverged": None, "val": {"accuracy": self.val[j.arm]},
                 "held_out": self.rows[j.arm, j.seed]} for j in jobs]


def test_the_finalists_train_on_more_seeds_and_the_decision_averages_them(digits):
    from policysearch.protocol.core import RERANK_SEED

    searched, held = hold_out(digits, 0.5, 0)
    arms = [Arm("learned #1", None, None, True, "a"), Arm("learned #2", None, None, True, "b"),
            Arm("none", None, None, False, "n"), Arm("erasing", None, None, False, "e")]
    base = [[1.0]] * 40 + [[0.0]] * 10
    unlucky = [[1.0]] * 38 + [[0.0]] * 12  # the re-ranking's seed: the searched arm trails
    lucky = [[1.0]] * 49 + [[0.0]] * 1  # every further seed: it leads by 9 images
    seeds = [RERANK_SEED + i for i in range(4)]
    rows = {(a.label, s): base for a in arms for s in seeds}
    rows |= {("learned #1", seeds[0]): unlucky} | {("learned #1", s): lucky for s in seeds[1:]}
    val = {"learned #1": 0.91, "learned #2": 0.80, "none": 0.85, "erasing": 0.90}
    ledger = _SeededLedger(searched, held, val, rows)
    chosen, _, decision = choose_on_validation(ledger, arms, 1, 0, "accuracy")
    assert chosen.label == "erasing" and decision["seeds"] == 1 and len(ledger.phases) == 1
    ledger.phases.clear()
    chosen, _, decision = choose_on_validation(ledger, arms, 1, 0, "accuracy", finalist_seeds=4, confidence=0.8)
    # Only the two finalists train again, on the same three fresh seeds; the re-ranking's seed still counts.
    assert ledger.phases[1] == ("held-out decision", [(label, s) for label in ("learned #1", "erasing")
                                                      for s in seeds[1:]])
    # (38 + 3 x 49) / 4 of 50 images right against erasing's 40: +12.5 points.
    assert decision["seeds"] == 4 and decision["difference"]["mean"] == pytest.approx(12.5)
    assert chosen.label == "learned #1" and decision["difference"]["low"] > 0
    # The seeds disagree (-4, +18, +18, +18 points): counting their scatter the lead is likely, not sure.
    assert decision["seed_differences"] == pytest.approx([-4.0, 18.0, 18.0, 18.0])
    assert 0.8 < decision["share_ahead"] < 0.975 and decision["share_ahead_images"] == 1.0
    ledger.phases.clear()
    chosen, _, decision = choose_on_validation(ledger, arms, 1, 0, "accuracy", finalist_seeds=4)
    assert chosen.label == "erasing"  # at the 95 % bar the scatter keeps it out
    # As many finalist seeds as the re-ranking's: nothing more is trained.
    ledger.phases.clear()
    choose_on_validation(ledger, arms, 2, 0, "accuracy", finalist_seeds=2)
    assert [phase for phase, _ in ledger.phases] == ["re-ranking on validation"]


def test_the_search_never_scores_the_held_out_images_and_the_record_says_what_decided(digits, tmp_path):
    import json

    from policysearch.protocol import find_augmentation

    tiny = dict(epochs=2, controller="random", budget=2, top=1, rerank_seeds=1, seeds=2, segments=2, progress=False)
    said = []
    result = find_augmentation(digits, "mlp", baselines=("none",), compare=False, out=tmp_path / "p",
                               say=said.append, **tiny)
    record = json.loads((tmp_path / "p" / "protocol.json").read_text())
    assert record["search"]["env"]["split"]["val_size"] == 50 and record["search"]["env"]["split"]["held_out"] == 50
    assert record["held_out"] == result.decision and result.decision["images"] == 50
    assert result.chosen in ("learned", "none") and result.decision["exported"] == result.chosen
    lines = [json.loads(line) for line in (tmp_path / "p" / "trainings.jsonl").read_text().splitlines()]
    assert lines and all(len(r["held_out"]) == 50 for r in lines)
    assert any("50 held out" in line for line in said)


def test_compression_keeps_uniform_unless_the_held_out_images_confirm_the_searched_plan(digits):
    from policysearch.protocol.compress import _held_out_choice, _verdict

    _, held = hold_out(digits, 0.5, 0)
    right = np.array([[1.0]] * 45 + [[0.0]] * 5)
    worse = np.array([[1.0]] * 35 + [[0.0]] * 15)
    scores, means, decision = _held_out_choice([[right, right], [worse, worse]], held, "accuracy", 0)
    assert decision["exported"] == "searched" and decision["difference"]["low"] > 0 and means == [0.9, 0.7]
    assert scores == [[0.9, 0.9], [0.7, 0.7]]
    _, means, decision = _held_out_choice([[worse, right], [right, worse]], held, "accuracy", 0)
    assert decision["exported"] == "uniform" and decision["difference"]["mean"] == pytest.approx(0.0)
    ranking = [{"val_mean": m} for m in means]
    line = _verdict("uniform", None, ranking, 0.5, "accuracy", decision)["line"]
    assert "held-out validation images was +0.00" in line and line.startswith("keep uniform pruning")
    _, _, decision = _held_out_choice([[right, None], [worse, worse]], held, "accuracy", 0)
    assert decision["exported"] == "uniform" and decision["reason"] == "a distillation diverged"


def test_the_bar_exports_a_likely_lead_that_the_95_percent_interval_would_keep_out(digits):
    from policysearch.protocol.selection import decide

    base = [[1.0]] * 30 + [[0.0]] * 20
    ahead = [[1.0]] * 33 + [[0.0]] * 17  # five images gained, two lost (below): three more right
    ahead[0], ahead[40] = [0.0], [1.0]
    ahead[1], ahead[41] = [0.0], [1.0]
    ci = decide("classification", "learned", "none", [ahead], [base], 50, confidence=None)
    share = ci["share_ahead"]
    assert ci["difference"]["low"] <= 0 < ci["difference"]["mean"] and ci["exported"] == "none"
    assert 0.8 < share < 0.975 and ci["bar"] == "above zero at 95 %"
    likely = decide("classification", "learned", "none", [ahead], [base], 50, confidence=0.8)
    assert likely["exported"] == "learned" and likely["share_ahead"] == share  # the same bootstrap, a lower bar
    assert decide("classification", "learned", "none", [ahead], [base], 50, confidence=0.99)["exported"] == "none"
    assert decide("classification", "learned", "none", [base], [base], 50, confidence=0.5)["exported"] == "none"
    # the verdict names the bar it was held to
    searched, held = hold_out(digits, 0.5, 0)
    arms = [Arm("learned #1", None, None, True, "a"), Arm("none", None, None, False, "n")]
    ledger = _Ledger(searched, held, {"learned #1": 0.9, "none": 0.8}, {"learned #1": base, "none": ahead})
    chosen, rows, decision = choose_on_validation(ledger, arms, 1, 0, "accuracy", confidence=0.8)
    assert chosen.label == "none" and decision["share_ahead"] < 0.2
    line = verdict_line(chosen, None, rows, decision)["line"]
    assert "not ahead in more than 80 % of the resamples" in line and "% of the resamples, not" in line


def test_seeds_that_scatter_widen_the_decision_and_seeds_that_agree_do_not():
    from policysearch.protocol.selection import decide, seed_and_image_share

    # The registered E3 schedule's per-seed held-out leads (points), at three seeds and at eight.
    three, eight = [0.40, 0.63, 3.27], [0.40, 0.63, 3.27, -6.10, 0.03, 2.00, 1.57, -2.80]
    assert 0.8 < seed_and_image_share(three, 0.35)[0] < 0.9
    assert seed_and_image_share(eight, 0.23)[0] < 0.5
    share, se = seed_and_image_share([1.0, 1.1, 0.9], 0.2)  # seeds that agree: the images' error dominates
    assert share > 0.97 and se == pytest.approx(np.sqrt(0.01 / 3 + 0.04))
    assert seed_and_image_share([0.0, 0.0], 0.0) == (0.0, 0.0)
    # decide: per-seed rows, the same images; seed 2 reverses seed 1's lead.
    good = [[1.0]] * 45 + [[0.0]] * 5
    base = [[1.0]] * 40 + [[0.0]] * 10
    bad = [[1.0]] * 35 + [[0.0]] * 15
    agree = decide("classification", "learned", "none", [good, good], [base, base], 50, confidence=0.8,
                   seed_error=True)
    assert agree["exported"] == "learned" and agree["seed_differences"] == pytest.approx([10.0, 10.0])
    scatter = decide("classification", "learned", "none", [good, bad, good], [base, base, base], 50, confidence=0.8,
                     seed_error=True)
    images_only = decide("classification", "learned", "none", [good, bad, good], [base, base, base], 50,
                         confidence=0.8)
    assert images_only["exported"] == "learned" and images_only["share_ahead"] > 0.8
    assert scatter["exported"] == "none" and scatter["share_ahead"] < 0.8 < scatter["share_ahead_images"]
    assert "seeds' scatter" in scatter["bar"]
