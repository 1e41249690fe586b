"""Commands that read finished (or interrupted) run folders: `compare` and `pareto`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from policysearch.cli.arguments import add_output_args, positive_int
from policysearch.cli.options import emit_json

EXAMPLES = {
    "compare": """\
  policysearch compare runs/digits-random runs/digits-tpe runs/digits-ppo
  policysearch compare runs/a runs/b --plot a-vs-b.png --window 10
  policysearch compare runs/* --json | jq '.runs[] | {run, controller, "best score"}'""",
    "pareto": """\
  policysearch pareto runs/digits-ppo --objectives accuracy,neg_ece
  policysearch pareto runs/digits-half --objectives accuracy,flops_fraction --json | jq .front""",
}


def add_compare_parser(sub: Any) -> None:
    """Register `compare RUN...` and `pareto RUN` on the main parser's sub-commands."""
    from policysearch.cli.tracking import objective_list

    p = sub.add_parser("compare", help="tabulate and plot search runs side by side: best score, cost, best so far",
                       epilog="examples:\n" + EXAMPLES["compare"])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each with episodes.jsonl)")
    p.add_argument("--plot", default="compare.png",
                   help="the plot: best so far and rolling mean vs child trainings and vs training TFLOPs "
                        "(default: %(default)s)")
    p.add_argument("--window", type=positive_int, default=5,
                   help="rolling mean over this many child trainings (default: %(default)s)")
    add_output_args(p, progress=False)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("pareto", help="the Pareto front of a run's child trainings over chosen objectives",
                       epilog="examples:\n" + EXAMPLES["pareto"])
    p.add_argument("run", metavar="RUN", help="a run folder (with episodes.jsonl)")
    p.add_argument("--objectives", type=objective_list, required=True, metavar="A,B",
                   help="e.g. accuracy,tflops or accuracy,neg_ece; NAME:max / NAME:min for any other "
                        "figure (required)")
    p.add_argument("--out", default=None,
                   help="folder for pareto.json and pareto.png (default: the run folder)")
    add_output_args(p, progress=False)
    p.set_defaults(func=cmd_pareto)


def cmd_compare(args: argparse.Namespace) -> int:
    from policysearch.analysis.report import format_table
    from policysearch.analysis.run_plots import plot_runs
    from policysearch.analysis.runs import compare_runs
    from policysearch.files import check_output_file

    plot = check_output_file(args.plot, "--plot")
    rows, series, notes = compare_runs(args.runs, window=args.window)
    shown = [{k: v for k, v in r.items() if k not in ("best episode",)} for r in rows]
    for row in shown:
        row["TFLOPs"] = f"{row['TFLOPs']:.3g}"
    print(format_table(shown))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    png = plot_runs(series, plot, window=args.window, title=f"{len(rows)} search run(s)")
    if png:
        print(f"wrote {png}")
    if args.json:
        emit_json({"runs": rows, "plot": str(png) if png else None, "notes": notes})
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from policysearch.analysis.report import format_table
    from policysearch.analysis.runs import load_run
    from policysearch.files import check_output_dir
    from policysearch.search.pareto import write_pareto

    out = check_output_dir(args.out or args.run, "--out")
    run = load_run(args.run)
    env = run.env
    result = write_pareto(Path(out), run.episodes, args.objectives,
                          title=f"{(run.summary or {}).get('controller', '')} on {env.get('dataset', '')}".strip())
    rows = [{"episode": p["episode"], **p["values"]} for p in result["front"]]
    print(format_table(rows) if rows else "the front is empty (no finished child training reports these objectives)")
    print(f"{len(rows)} of {result['episodes']} child trainings on the front; wrote {out}/: pareto.json"
          + (", pareto.png" if result["files"]["pareto_plot"] else ""))
    if args.json:
        emit_json(result)
    return 0
