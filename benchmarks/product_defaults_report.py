"""The outcomes of the pre-registered product-defaults runs (benchmarks/preregistered/product_defaults.md, the
held-out decision's checks, held_out_decision.md, held_out_schedule.md and held_out_decision_seeds.md, and the
zero-shot LR default's,
zero_shot_cheap_probe.md and zero_shot_power.md), read from
their files under benchmarks/results/product/, judged by the pre-registrations' rules.

    python benchmarks/product_defaults_report.py            # Markdown tables on stderr, one JSON line on stdout
    python benchmarks/product_defaults_report.py --out benchmarks/results/product/report.json

Nothing is trained: a run whose files are missing is reported as "not run". The rules:

- a protocol run (augment, schedule, compress) "beats every baseline" when it exports the searched arm
  and every paired CI of (exported - baseline) on the test split lies above zero; it "says so" when it
  exports a baseline and its verdict line names it; anything else is reported as it came out;
- a run "does no harm" when the exported arm loses to no arm of the final comparison on test (no paired
  CI of exported - arm entirely below zero);
- a zero-shot task passes when the lower end of the paired 95 % CI of (rule - the better onecycle arm,
  plain or at equal images) is above -0.2 points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "product"
REGIMES = ("R1", "R2", "R3")
JOBS = ("augment", "schedule", "compress")
HELD_OUT_RUNS = (("H2", "augment"), ("H2", "compress"), ("H3", "augment"), ("H3", "compress"), ("H5", "augment"),
                 ("H1", "schedule"))  # H1: held_out_schedule.md
DECISION_SEEDS_RUNS = tuple((r, j) for r in ("D1", "D2", "D3") for j in ("augment", "schedule"))
# the held-out decision's 0.8 bar (held_out_decision_bar.md), and that bar counting the seeds' scatter
# (held_out_decision_scatter.md)
BAR_RUNS = tuple((r, j) for r in ("E1", "E2", "E3", "F1", "F2", "F3") for j in ("augment", "schedule"))
ZERO_SHOT = ("Z1", "Z2", "Z3", "Z4")
ZERO_SHOT_PROBE = ("P1", "P2", "P3", "P4", "P5", "P6")  # the cheaper probe's check (zero_shot_cheap_probe.md)
ZERO_SHOT_POWER = ("Q5", "Q7", "Q8", "Q9", "Q10")  # seeds from each task's scatter (zero_shot_power.md)
# the rule that decides only for the kinds of nets its table gained on (zero_shot_layer_kinds.md)
ZERO_SHOT_LAYER_KINDS = ("K5", "K11", "K12", "K13", "K14", "K15", "K16")
TOLERANCE_POINTS = 0.2


def _protocol(folder: Path) -> dict[str, Any] | None:
    """protocol.json, or the "protocol" part of compress's summary.json (its command writes that)."""
    if (folder / "protocol.json").exists():
        return json.loads((folder / "protocol.json").read_text())
    if (folder / "summary.json").exists():
        return json.loads((folder / "summary.json").read_text()).get("protocol")
    return None


def protocol_outcome(regime: str, job: str) -> dict[str, Any]:
    record = _protocol(RESULTS / f"{regime}-{job}")
    if record is None:
        return {"regime": regime, "job": job, "outcome": "not run"}
    verdict, comparison = record["verdict"], record.get("comparison")
    searched = bool(verdict.get("searched_won"))
    diffs = {k: v for k, v in (comparison or {}).get("differences", {}).items() if v is not None}
    if not searched:
        outcome = f"exports {record['chosen']} and says so"
    elif diffs and all(d["low"] > 0 for d in diffs.values()):
        outcome = "beats every baseline"
    elif diffs and any(d["high"] < 0 for d in diffs.values()):
        outcome = "exports the searched arm, which loses to a baseline on test"
    else:
        outcome = "exports the searched arm, not resolved against every baseline on test"
    return {"regime": regime, "job": job, "chosen": record["chosen"], "outcome": outcome, "line": verdict["line"],
            "does_no_harm": not any(d["high"] < 0 for d in diffs.values()), "held_out": record.get("held_out"),
            "validation": {r["arm"]: r["val_mean"] for r in record.get("ranking", [])},
            "test": {arm: row["mean"] for arm, row in (comparison or {}).get("arms", {}).items()},
            "differences": diffs, "metric": (comparison or {}).get("metric")}


def zero_shot_outcome(run: str) -> dict[str, Any]:
    path = RESULTS / f"{run}-zero-shot.json"
    if not path.exists():
        return {"run": run, "task": run, "outcome": "not run"}
    result = json.loads(path.read_text())["results"][0]
    rows = {row["arm"]: row for row in result["rows"]}
    better = max(("onecycle", "onecycle@equal-images"), key=lambda arm: rows[arm]["mean"])
    d = {k: 100 * rows[better]["controller_minus_arm"][k] for k in ("mean", "low", "high")}
    factors = sorted({f[0] for f in rows["controller"].get("factors", [])})
    probe = sorted({s["images"] for s in rows["controller"].get("selections", [])})
    return {"run": run, "task": result["task"], "data": f"{result['dataset']} {result['train_images']}",
            "model": result["model"], "seeds": len(result["seeds"]), "probe_images": probe,
            "epochs": result["epochs"], "rule": rows["controller"]["mean"], "onecycle": rows["onecycle"]["mean"],
            "onecycle_equal_images": rows["onecycle@equal-images"]["mean"], "better_onecycle": better,
            "rule_minus_better_points": d, "factors_chosen": factors,
            "outcome": "pass" if d["low"] > -TOLERANCE_POINTS else "fail"}


def finalist_rows(regime: str, job: str, held: dict[str, Any] | None) -> dict[str, dict[int, Any]] | None:
    """The two finalists' held-out rows per seed, read once from a run's ledger (None without a decision)."""
    from policysearch.files import read_jsonl
    from policysearch.protocol.core import RERANK_SEED

    path = RESULTS / f"{regime}-{job}" / "trainings.jsonl"
    if held is None or not path.exists():
        return None
    records, _ = read_jsonl(path)
    rows: dict[str, dict[int, Any]] = {held["searched"]: {}, held["baseline"]: {}}
    for r in records:
        if r["arm"] in rows and r.get("test") is None and "held_out" in r and r["seed"] >= RERANK_SEED:
            rows[r["arm"]][r["seed"]] = r["held_out"]
    return rows


def ledger_decision(held: dict[str, Any] | None, rows: dict[str, dict[int, Any]] | None, seeds: int | None = None,
                    confidence: float | None = None) -> dict[str, Any] | None:
    """The held-out decision retaken from a run's ledger rows (`finalist_rows`): the same two finalists on their
    first `seeds` seeds (None: every seed the run trained them on; 1: the re-ranking's seed alone, the default
    before held_out_decision_seeds.md), at the bar `confidence` (`policysearch.protocol.selection.decide`)."""
    from policysearch.protocol.core import RERANK_SEED
    from policysearch.protocol.selection import decide

    if held is None or rows is None:
        return None
    a, b = held["searched"], held["baseline"]
    count = seeds or held.get("seeds", 1)
    every = [RERANK_SEED + i for i in range(count)]
    if any(s not in rows[arm] for arm in (a, b) for s in every):
        return None
    # The registered regimes are all classification (accuracy); seed 0 is the runs' --seed.
    return decide("classification", a, b, [rows[a][s] for s in every], [rows[b][s] for s in every], held["images"],
                  0, confidence)


def deciding_arm(row: dict[str, Any]) -> str | None:
    """The arm a run's outcome turns on, by the verdict line's rule (its metrics are all higher-is-better)."""
    from policysearch.protocol.core import deciding_baseline

    return deciding_baseline(row["differences"], row["test"])


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    protocols = [protocol_outcome(r, j) for r in REGIMES for j in JOBS]
    held_out = [protocol_outcome(r, j) for r, j in HELD_OUT_RUNS]
    decision_seeds = [protocol_outcome(r, j) for r, j in DECISION_SEEDS_RUNS]
    bar_runs = [protocol_outcome(r, j) for r, j in BAR_RUNS]
    from policysearch.protocol.effort import BAR

    d_runs = {id(row) for row in decision_seeds}
    for row in [*held_out, *decision_seeds, *bar_runs]:  # the decision at either bar, from one read of the ledger
        held = row.get("held_out")
        rows = finalist_rows(row["regime"], row["job"], held)
        if id(row) in d_runs:
            row["one_seed_decision"] = ledger_decision(held, rows, seeds=1)
        row["at_bar"] = ledger_decision(held, rows, confidence=BAR)
        row["at_95"] = ledger_decision(held, rows)
    zero_shot = [zero_shot_outcome(t) for t in ZERO_SHOT]
    zero_shot_probe = [zero_shot_outcome(t) for t in ZERO_SHOT_PROBE]
    zero_shot_power = [zero_shot_outcome(t) for t in ZERO_SHOT_POWER]
    zero_shot_layer_kinds = [zero_shot_outcome(t) for t in ZERO_SHOT_LAYER_KINDS]
    lines = ["| regime | job | exported | outcome | the arm it turns on: exported − it on test [95 % CI] |",
             "|---|---|---|---|---|"]
    for row in protocols:
        if row["outcome"] == "not run":
            lines.append(f"| {row['regime']} | {row['job']} | | not run | |")
            continue
        diffs = row["differences"]
        named = deciding_arm(row)
        text = f"{named}: {_ci(diffs[named])}" if named else "no test comparison"
        lines.append(f"| {row['regime']} | {row['job']} | {row['chosen']} | {row['outcome']} | {text} |")
    lines += ["", "| run | exported | held-out images: best searched − best baseline [95 % CI] | outcome | does no "
              "harm | the arm it turns on: exported − it on test [95 % CI] |", "|---|---|---|---|---|---|"]
    for row in [*held_out, *decision_seeds, *bar_runs]:
        if row["outcome"] == "not run":
            lines.append(f"| {row['regime']} {row['job']} | | | not run | | |")
            continue
        decision = row["held_out"] or {}
        d = decision.get("difference")
        said = (f"{decision['searched']} − {decision['baseline']}: {_ci(d)} {decision['unit']} over {d['images']}"
                if d else decision.get("reason", "no decision (the search ended at the baseline)"))
        diffs = row["differences"]
        named = deciding_arm(row)
        text = f"{named}: {_ci(diffs[named])}" if named else "no test comparison"
        lines.append(f"| {row['regime']} {row['job']} | {row['chosen']} | {said} | {row['outcome']} | "
                     f"{'yes' if row['does_no_harm'] else '**no**'} | {text} |")
    for runs in (zero_shot, zero_shot_probe, zero_shot_power, zero_shot_layer_kinds):
        lines += ["", "| run | task | data | model, epochs | seeds | probe images | rule | onecycle | onecycle, equal "
                  "images | rule − better [95 % CI], points | factors | outcome |", "|---" * 12 + "|"]
        for row in runs:
            if row["outcome"] == "not run":
                lines.append(f"| {row['run']} | | | | | | | | | | | not run |")
                continue
            lines.append(f"| {row['run']} | {row['task']} | {row['data']} | {row['model']}, {row['epochs']} | "
                         f"{row['seeds']} | {', '.join(map(str, row['probe_images']))} | {row['rule']:.4f} | "
                         f"{row['onecycle']:.4f} | {row['onecycle_equal_images']:.4f} | "
                         f"{_ci(row['rule_minus_better_points'])} | "
                         f"{', '.join(f'x{f:.3g}' for f in row['factors_chosen'])} | {row['outcome']} |")
    lines += ["", "| run | held-out decision, 3 seeds per arm | exported | the re-ranking's seed alone | "
              "would export |", "|---|---|---|---|---|"]
    for row in decision_seeds:
        if row["outcome"] == "not run":
            continue
        now, one = row["held_out"] or {}, row["one_seed_decision"] or {}
        lines.append(f"| {row['regime']} {row['job']} | "
                     + (f"{_ci(now['difference'])} over {now['images']}" if now.get("difference") else "—")
                     + f" | {row['chosen']} | " + (_ci(one["difference"]) if one.get("difference") else "—")
                     + f" | {one.get('exported', '—')} |")
    lines += ["", f"| run | seeds per arm | held-out difference | share of image resamples ahead | counting seeds "
              f"(the run's) | exported | images alone at 95 % | images alone at {BAR:g} |", "|---" * 8 + "|"]
    for row in [*held_out, *decision_seeds, *bar_runs]:
        bar, ci = row.get("at_bar"), row.get("at_95")
        if row["outcome"] == "not run" or not bar or bar.get("difference") is None:
            continue
        seeds = (f"{row['held_out']['share_ahead']:.2f}" if row["held_out"].get("seed_differences") is not None
                 else "—")
        lines.append(f"| {row['regime']} {row['job']} | {row['held_out'].get('seeds', 1)} | {_ci(bar['difference'])} | "
                     f"{bar['share_ahead']:.2f} | {seeds} | {row['chosen']} | {ci['exported']} | {bar['exported']} |")
    print("\n".join(lines), file=sys.stderr)
    record = {"benchmark": "product_defaults_report", "protocols": protocols, "held_out_runs": held_out,
              "decision_seeds_runs": decision_seeds, "bar_runs": bar_runs,
              "zero_shot": zero_shot,
              "zero_shot_passes": sum(r["outcome"] == "pass" for r in zero_shot),
              "zero_shot_run": sum(r["outcome"] != "not run" for r in zero_shot),
              "zero_shot_probe": zero_shot_probe,
              "zero_shot_probe_passes": sum(r["outcome"] == "pass" for r in zero_shot_probe),
              "zero_shot_probe_run": sum(r["outcome"] != "not run" for r in zero_shot_probe),
              "zero_shot_power": zero_shot_power,
              "zero_shot_power_passes": sum(r["outcome"] == "pass" for r in zero_shot_power),
              "zero_shot_power_run": sum(r["outcome"] != "not run" for r in zero_shot_power),
              "zero_shot_layer_kinds": zero_shot_layer_kinds,
              "zero_shot_layer_kinds_passes": sum(r["outcome"] == "pass" for r in zero_shot_layer_kinds),
              "zero_shot_layer_kinds_run": sum(r["outcome"] != "not run" for r in zero_shot_layer_kinds)}
    text = json.dumps(record)
    print(text)
    if args.out:
        from policysearch.files import write_json

        write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
