"""How cheap can the peak rule's curvature probe be? Refit the rule on its own table with cheaper probes.

The shipped `zoo:peak-rule` measures the curvature on 128 images with 8 power iterations: 2,176 images'
training (a Hessian-vector product counted as two images), which a user pays on every run, whatever
the rule then decides. On a small task that is a tenth of the run or more, and where the rule keeps
factor 1 those images are pure loss (issue 31's zero-shot task Z2).

The table the rule was fitted on (`benchmarks/results/schedule_zero_shot/train-peak-rule/table.jsonl`,
150 tasks x 3 factors, validation accuracy only) records each task and its child seed, so the initial
weights and the probe's batch can be rebuilt exactly. For each probe setting (images, iterations) this
script recomputes every row's start features, refits the rule with the same code and penalties
(`contrib.peak_rule_search.fit_rule`), and reports:
- the probe's cost in images and as a share of the task's run;
- the cross-validated gain of the rule (5 folds over tasks, and leave one (data set, model) pair out,
  the estimate for pairs never trained on), each at the penalty the fit chooses;
- how often its in-sample choice agrees with the shipped setting's.
The first setting must reproduce the stored features (to 1e-6: one torch thread, as the table's workers
ran; same torch build and CPU), or the script stops: a refit on features that differ for another reason
would compare nothing.

`--save-rule IMAGESxITERATIONS FILE` writes the refitted rule of one setting (plain JSON).

    python benchmarks/peak_rule_probe_cost.py --out benchmarks/results/peak_rule_probe_cost.json
    python benchmarks/peak_rule_probe_cost.py --settings 128x8,32x2 --rows 6     # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TABLE = Path(__file__).resolve().parent / "results" / "schedule_zero_shot" / "train-peak-rule"
SETTINGS = "128x8,64x4,32x4,32x2,16x2"


def parse_setting(text: str) -> tuple[int, int]:
    try:
        images, iterations = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"{text!r}: expected IMAGESxITERATIONS, e.g. 32x2") from None
    if images < 1 or iterations < 1:
        raise SystemExit(f"{text!r}: images and iterations must be positive")
    return images, iterations


def recompute(rows: list[dict[str, Any]], val_size: int, images: int, iterations: int) -> list[dict[str, Any]]:
    """Each row's start statistics and features at this probe, rebuilt as the table built them."""
    from policysearch.contrib.peak_rule_search import task_start

    out = []
    for row in rows:
        _, config, total, stats = task_start(row["spec"], row["child_seed"], val_size, images, iterations)
        out.append({**row, "features": stats.features(float(config.lr), total, config.optimizer),
                    "start": stats.to_dict(), "run_images": row["train_images"] / len(row["gains"])})
    return out


def chosen(cv: list[dict[str, Any]], penalty: Any) -> float:
    return next(c["value"] for c in cv if c["penalty"] == penalty)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=SETTINGS, help="probe settings IMAGESxITERATIONS; the first is the reference")
    p.add_argument("--rows", type=int, default=None, help="only the first N rows of the table (a quick check)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--save-rule", nargs=2, metavar=("SETTING", "FILE"), default=None,
                   help="write the refitted rule of this setting (e.g. 32x2) to FILE")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # as the table's worker processes ran
    from policysearch.contrib.peak_rule_search import fit_rule
    from policysearch.files import write_json
    from policysearch.policies.artifact import provenance, read_json

    settings = read_json(TABLE / "settings.json")
    table_summary = read_json(TABLE / "summary.json")
    rows = [json.loads(line) for line in (TABLE / "table.jsonl").read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["index"])
    rows = rows[: args.rows] if args.rows else rows
    probes = [parse_setting(s) for s in args.settings.split(",")]
    start = time.perf_counter()
    results, reference_choices = [], None
    for i, (images, iterations) in enumerate(probes):
        t0 = time.perf_counter()
        new = recompute(rows, settings["val_size"], images, iterations)
        if i == 0 and (images, iterations) == (settings["images"], settings["iterations"]):
            bad = [r["index"] for r, n in zip(rows, new)
                   if any(abs(r["features"][k] - n["features"][k]) > 1e-6 for k in r["features"])]
            if bad:
                raise SystemExit(f"the reference probe did not reproduce the stored features of rows {bad[:5]}")
        note = {"trained_by": f"the table of `policysearch peak-rule` ("
                              f"{TABLE.relative_to(TABLE.parents[3])}), refitted by benchmarks/peak_rule_probe_cost.py "
                              f"with a probe of {images} images x {iterations} power iterations",
                "training_cost": f"{table_summary['child_trainings']} child trainings, "
                                 f"{table_summary['train_tflops']} TFLOPs (the table); the refit: {len(new)} probes",
                "note": "zero-shot results: benchmarks/RESULTS.md (the peak rule's probe)"}
        rule, report = fit_rule(new, settings["factors"], settings["base"], images, iterations,
                                provenance(tasks=settings["tasks"], n_tasks=len(new), seed=settings["seed"], **note))
        choices = [r["choice"] for r in new]
        if reference_choices is None:
            reference_choices = choices
        share = [n["start"]["images"] / n["run_images"] for n in new]
        penalty = report["penalty"]
        results.append({
            "setting": f"{images}x{iterations}", "images": images, "iterations": iterations,
            "probe_images": new[0]["start"]["images"],
            "probe_share_of_run": {"median": float(np.median(share)), "max": float(np.max(share))},
            "penalty": penalty, "in_sample_gain": report["in_sample_gain"],
            "cv_gain_folds": chosen(report["cross_validation"], penalty),
            "cv_gain_leave_pair_out": chosen(report["cross_validation_by_pair"], penalty),
            "cv_leave_pair_out_per_pair": next(c["per_group"] for c in report["cross_validation_by_pair"]
                                               if c["penalty"] == penalty),
            "choices_by_pair": report["choices_by_pair"],
            "agreement_with_reference": float(np.mean([a == b for a, b in zip(choices, reference_choices)])),
            "log_lr_sharpness_vs_reference": {
                "correlation": float(np.corrcoef([r["features"]["log_lr_sharpness"] for r in new],
                                                 [r["features"]["log_lr_sharpness"] for r in rows])[0, 1])
                if len(rows) > 1 else math.nan,
                "mean_shift": float(np.mean([n["features"]["log_lr_sharpness"] - r["features"]["log_lr_sharpness"]
                                             for n, r in zip(new, rows)]))},
            "seconds": round(time.perf_counter() - t0, 1),
        })
        print(f"{images:>4} x {iterations}: {results[-1]['probe_images']:>5} images "
              f"(median {100 * results[-1]['probe_share_of_run']['median']:.1f} % of a run), "
              f"CV gain {results[-1]['cv_gain_folds']:+.3f} / "
              f"leave-pair-out {results[-1]['cv_gain_leave_pair_out']:+.3f} "
              f"points, agrees {100 * results[-1]['agreement_with_reference']:.0f} %", file=sys.stderr, flush=True)
        if args.save_rule and args.save_rule[0] == f"{images}x{iterations}":
            rule.save(args.save_rule[1])
    record = {"benchmark": "peak_rule_probe_cost", "table": str(TABLE.relative_to(TABLE.parents[3])),
              "rows": len(rows), "results": results, "wall_minutes": round((time.perf_counter() - start) / 60, 2),
              "command": "python benchmarks/peak_rule_probe_cost.py "
                         + " ".join(sys.argv[1:] if argv is None else argv)}
    print(json.dumps(record))
    if args.out:
        write_json(Path(args.out), record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
