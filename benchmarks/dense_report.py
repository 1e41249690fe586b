"""The outcomes of the pre-registered dense-task runs (benchmarks/preregistered/dense_small_data.md), read from
their files under benchmarks/results/dense/, judged by the pre-registration's rules.

    python benchmarks/dense_report.py            # Markdown tables on stderr, one JSON line on stdout
    python benchmarks/dense_report.py --out benchmarks/results/dense/report.json

Nothing is trained: a run whose files are missing is reported as "not run". The rules:

- augmentation, per regime: the searched policy "beats the recipes" when the paired 95 % CI of (searched -
  recipe) on test lies above zero for every recipe, "loses" to a recipe whose CI lies below zero, and is
  otherwise not resolved; the run's exported artefact and verdict are reported as they are;
- the peak rule "holds" when the lower end of the paired 95 % CI of (rule - onecycle) on test is above -0.2
  points of mIoU (-0.2 dB of PSNR);
- compression: the command's exported plan against uniform on test, as the command reports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from policysearch.analysis.stats import paired_bootstrap
from policysearch.metrics import difference_unit

RESULTS = Path(__file__).resolve().parent / "results" / "dense"
REGIMES = {"S": "segmentation: 500-scene mask folder at 32x32, unet, 30 epochs",
           "D": "denoising: fashion-denoise 500 images, unet-residual, 30 epochs"}
TOLERANCE = 0.2  # points of mIoU, dB of PSNR


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def _record(folder: Path) -> dict[str, Any] | None:
    for name in ("protocol.json", "summary.json"):
        if (folder / name).exists():
            record = json.loads((folder / name).read_text())
            return record.get("protocol", record) if name == "summary.json" else record
    return None


def augment_outcome(regime: str) -> dict[str, Any]:
    record = _record(RESULTS / f"{regime}-augment")
    if record is None:
        return {"regime": regime, "outcome": "not run"}
    comparison = record["comparison"]
    arms, diffs = comparison["arms"], comparison["differences"]
    chosen = record["chosen"]
    # Every difference as (searched - recipe): the comparison signs them for the exported arm.
    if chosen == "learned":
        searched_minus = {k: v for k, v in diffs.items() if v is not None}
    else:  # a recipe was exported: learned - recipe from the per-seed scores
        factor = difference_unit(comparison["metric"])[0]
        learned = arms["learned"]["per_seed"]
        searched_minus = {}
        for label, arm in arms.items():
            if label == "learned":
                continue
            d = paired_bootstrap(learned, arm["per_seed"])
            searched_minus[label] = {k: factor * d[k] for k in ("mean", "low", "high")} | {"n": d["n"]}
    if all(d["low"] > 0 for d in searched_minus.values()):
        outcome = "the searched policy beats every recipe"
    else:
        lost = [k for k, d in searched_minus.items() if d["high"] < 0]
        outcome = ("the searched policy loses to " + ", ".join(lost)) if lost else \
            "not resolved against " + ", ".join(k for k, d in searched_minus.items() if d["low"] <= 0)
    return {"regime": regime, "what": REGIMES[regime], "metric": comparison["metric"], "unit": comparison["unit"],
            "exported": chosen, "line": record["verdict"]["line"], "seeds": comparison["seeds"],
            "test": {k: {"mean": v["mean"], "std": v["std"]} for k, v in arms.items()},
            "searched_minus": searched_minus, "outcome": outcome,
            "validation": {r["arm"]: r["val_mean"] for r in record.get("ranking", [])},
            "policy": record.get("search", {}).get("best")}


def peak_rule_outcome(regime: str) -> dict[str, Any]:
    path = RESULTS / f"{regime}-lr.json"
    if not path.exists():
        return {"regime": regime, "outcome": "not run"}
    record = json.loads(path.read_text())
    by_schedule = {r["schedule"]: r for r in record["results"]}
    onecycle, rule = by_schedule["onecycle"], by_schedule["zoo:peak-rule"]
    metric = "miou" if "miou" in onecycle["test"] else "psnr"
    factor, unit = difference_unit(metric)
    a = [run["test"][metric] for run in rule["runs"]]
    b = [run["test"][metric] for run in onecycle["runs"]]
    d = paired_bootstrap(a, b)
    d = {k: factor * d[k] for k in ("mean", "low", "high")} | {"n": d["n"]}
    same = sum(x == y for x, y in zip(a, b))  # the rule kept x1: the run is onecycle's, bit for bit
    probe = rule["cost"]["images"] - onecycle["cost"]["images"]
    return {"regime": regime, "metric": metric, "unit": unit, "rule": rule["test"][metric]["mean"],
            "onecycle": onecycle["test"][metric]["mean"], "rule_minus_onecycle": d, "seeds_identical": same,
            "probe_images_per_run": probe, "outcome": "holds" if d["low"] > -TOLERANCE else "does not hold"}


def compress_outcome(regime: str) -> dict[str, Any]:
    folder = RESULTS / f"{regime}-compress"
    record = _record(folder)
    if record is None:
        return {"regime": regime, "outcome": "not run"}
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    comparison = record.get("comparison")
    d = (comparison or {}).get("differences", {}).get("uniform")
    return {"regime": regime, "exported": record["chosen"], "line": record["verdict"]["line"],
            "validation": {r["arm"]: r["val_mean"] for r in record.get("ranking", [])},
            "searched_minus_uniform": d, "teacher_student": summary.get("comparison"),
            "outcome": record["verdict"]["line"]}


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    augment = [augment_outcome(r) for r in REGIMES]
    rule = [peak_rule_outcome(r) for r in REGIMES]
    compress = [compress_outcome("S")]
    lines = ["| regime | exported | test: searched | recipes (mean) | searched − recipe [95 % CI] | outcome |",
             "|---|---|---|---|---|---|"]
    for row in augment:
        if row["outcome"] == "not run":
            lines.append(f"| {row['regime']} | | | | | not run |")
            continue
        recipes = ", ".join(f"{k} {v['mean']:.4f}" for k, v in row["test"].items() if k != "learned")
        diffs = "; ".join(f"{k}: {_ci(d)}" for k, d in row["searched_minus"].items())
        lines.append(f"| {row['regime']} ({row['metric']}, {row['unit']}) | {row['exported']} | "
                     f"{row['test']['learned']['mean']:.4f} | {recipes} | {diffs} | {row['outcome']} |")
    lines += ["", "| regime | onecycle | zoo:peak-rule | rule − onecycle [95 % CI] | seeds where the rule is "
              "onecycle | probe images per run | outcome |", "|---|---|---|---|---|---|---|"]
    for row in rule:
        if row["outcome"] == "not run":
            lines.append(f"| {row['regime']} | | | | | | not run |")
            continue
        lines.append(f"| {row['regime']} ({row['metric']}) | {row['onecycle']:.4f} | {row['rule']:.4f} | "
                     f"{_ci(row['rule_minus_onecycle'])} {row['unit']} | {row['seeds_identical']} of "
                     f"{row['rule_minus_onecycle']['n']} | {row['probe_images_per_run']:.0f} | {row['outcome']} |")
    for row in compress:
        lines += ["", f"compress {row['regime']}: {row['outcome']}"]
    print("\n".join(lines), file=sys.stderr)
    record = {"benchmark": "dense_report", "augment": augment, "peak_rule": rule, "compress": compress}
    print(json.dumps(record))
    if args.out:
        from policysearch.files import write_json

        write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
