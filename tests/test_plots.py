"""Plots (policysearch.analysis.plots): written, one panel per metric, every seed shown, axes that say what
they show."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from policysearch.analysis.plots import COMPARISON_METRICS, comparison_figure, plot_comparison
from policysearch.search.plots import plot_search


def _entries() -> list[dict]:
    entries = []
    for name, base in (("learned", 0.97), ("none", 0.98), ("trivial", 0.95)):
        runs = [{"seed": s, "diverged": None,
                 "test": {"accuracy": base + 0.003 * s, "macro_f1": base - 0.01 + 0.002 * s, "ece": 0.02 + 0.01 * s,
                          "nll": 0.1 + 0.02 * s}} for s in range(3)]
        entries.append({"augment": name, "schedule": "cosine", "seeds": [0, 1, 2], "epochs": 30, "runs": runs})
    return entries


def test_comparison_has_a_panel_per_metric_every_seed_and_a_caption(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = comparison_figure(_entries(), title="digits", note="359 test images")
    try:
        assert len(fig.axes) == len(COMPARISON_METRICS) == 4
        assert [ax.get_title() for ax in fig.axes] == [f"test {m}" for m in ("accuracy", "macro_f1", "ece", "nll")]
        for ax in fig.axes:
            dots = [line for line in ax.lines if line.get_marker() == "o"]
            assert sum(len(line.get_xdata()) for line in dots) == 9  # 3 policies x 3 seeds, each a dot
            assert not ax.patches  # no bars, so no truncated bar axis
        caption = " ".join(t.get_text() for t in fig.texts)
        for words in ("n=3 seeds", "± 1 sample std", "schedule cosine", "30 epochs", "359 test images"):
            assert words in caption, words
    finally:
        plt.close(fig)
    ci = comparison_figure(_entries(), interval="ci95")
    assert "95 % CI" in " ".join(t.get_text() for t in ci.texts)
    plt.close(ci)
    path = plot_comparison(_entries(), tmp_path / "comparison.png", title="digits")
    assert path == tmp_path / "comparison.png" and path.stat().st_size > 10_000


def test_search_plot_names_the_metric_and_validation_size_and_takes_a_random_baseline(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    import policysearch.search.plots as plots

    episodes = [{"episode": i, "score": 0.8 + 0.01 * i, "metric": 0.8 + 0.01 * i, "diverged": None} for i in range(8)]
    random_run = [{**e, "score": 0.78, "metric": 0.78} for e in episodes]
    seen = {}
    save = plots.save_figure

    def keep(plt, fig, path, layout=True):  # look at the axes before the figure is closed
        ax = fig.axes[0]
        seen["ylabel"], seen["labels"] = ax.get_ylabel(), [line.get_label() for line in ax.lines]
        return save(plt, fig, path, layout)

    monkeypatch.setattr(plots, "save_figure", keep)
    path = plot_search(episodes, tmp_path / "search.png", metric="macro_f1", val_size=288, random_episodes=random_run)
    assert path is not None and path.stat().st_size > 10_000
    assert "validation macro_f1" in seen["ylabel"] and "288 images" in seen["ylabel"]
    assert any(label.startswith("rolling mean") for label in seen["labels"])
    assert "random search: best so far" in seen["labels"]


def test_paired_differences_show_every_seed_both_intervals_and_zero(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from policysearch.analysis.plots import paired_differences_figure, plot_paired_differences

    rows = [{"label": "local#0", "differences": [0.001, 0.002, 0.0, 0.001], "ci": (0.0005, 0.0015),
             "ci_images": (-0.002, 0.004)},
            {"label": "random#0", "differences": [-0.003, -0.001, -0.002, -0.004], "ci": (-0.0035, -0.0015),
             "ci_images": None}]
    fig = paired_differences_figure(rows, title="50 % FLOPs")
    try:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["random#0", "local#0"]  # first row on top
        dots = [line for line in ax.lines if line.get_marker() == "o"]
        assert sorted(round(x, 6) for line in dots for x in line.get_xdata()) == [-0.4, -0.3, -0.2, -0.1, 0.0, 0.1,
                                                                                    0.1, 0.2]  # points
        spans = sorted(tuple(round(x, 6) for x in line.get_xdata()) for line in ax.lines
                       if line.get_linestyle() == "-" and line.get_marker() in ("None", "", None))
        assert spans == [(-0.35, -0.15), (-0.2, 0.4), (0.05, 0.15)]  # the two seed CIs and one over images
        assert any(line.get_xdata()[0] == 0.0 and line.get_linestyle() == "--" for line in ax.lines)
        assert "n=4" in " ".join(t.get_text() for t in fig.texts)
    finally:
        plt.close(fig)
    path = plot_paired_differences(rows, tmp_path / "d.png")
    assert path == tmp_path / "d.png" and path.stat().st_size > 5_000
