"""Would more seeds per finalist change the held-out decision? Measured on a finished protocol run.

The held-out decision (`policysearch.protocol.selection`) compares the best searched candidate with the best
baseline on the validation images the search never scored, each arm as one trained model (the default
re-ranking seed). On H2 and H1 (benchmarks/RESULTS.md, "The held-out decision") it kept the baseline where
the searched artefact was better on test: its interval was too wide to clear zero. This script resumes a
finished run from a copy of its folder, with the code that made it, and trains the two finalists on further
fresh seeds (the seeds `--decision-seeds` would use: the re-ranking's, then the next ones), then reports the
decision each number of seeds 1..K would have taken, beside the run's own test comparison (learned − the
kept baseline, 5 paired seeds), at the 95 % bar over the images the first runs were made with (`exported`)
and by the product's rule now (`exported_at_bar`: the searched finalist ahead with a probability above
`policysearch.protocol.effort.BAR`, counting the seeds' scatter as well as the images'; `share_ahead`, and
`share_ahead_images` for the images alone). The run itself is left as it was: its choice and files are not
changed.

Two steps, because the runs were made by older installs: `collect` resumes the run with the code that made
it and writes the finalists' held-out rows per seed; `report` takes the decisions with this checkout's
`policysearch.protocol.selection.decide` (the function `--decision-seeds` uses).

Exploratory: the H runs were seen before this was written, so what it shows is a hypothesis for a
pre-registered check, not evidence for a default.

    cp -r benchmarks/results/product/H2-augment /tmp/explore/
    PYTHONPATH=/path/to/frozen-site python benchmarks/decision_seeds.py collect --seeds 8 \\
        --out benchmarks/results/decision_seeds/H2-augment.json -- augment --dataset digits --train-size 500 \\
        --model cnn --epochs 60 --seed 0 --workers 2 --out /tmp/explore/H2-augment --resume
    python benchmarks/decision_seeds.py report benchmarks/results/decision_seeds/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def collect(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--resume" not in command or "--out" not in command:
        raise SystemExit("give the run's command with --out (a copy of its folder) and --resume")

    import policysearch
    import policysearch.protocol.jobs as jobs
    from policysearch.cli.main import main as cli_main
    from policysearch.files import write_json
    from policysearch.protocol.core import RERANK_SEED
    from policysearch.protocol.trainings import Job

    found: dict[str, Any] = {}
    original = jobs.choose_on_validation

    def with_more_seeds(ledger: Any, arms: Any, seeds: int, seed: int, metric: str, *rest: Any) -> Any:
        chosen, rows, decision = original(ledger, arms, seeds, seed, metric, *rest)
        if decision is None:
            return chosen, rows, decision
        finalists = [next(a for a in arms if a.label == decision[k]) for k in ("searched", "baseline")]
        every = [seed + RERANK_SEED + i for i in range(max(seeds, args.seeds))]
        runs = ledger.run([Job(a.label, a.augment, a.schedule, s, test=False) for a in finalists for s in every],
                          "held-out decision, more seeds (exploration)")
        found.update(task=ledger.data.task, images=len(ledger.held.y_val), seed=seed, seeds=every,
                     finalists=[a.label for a in finalists],
                     held_out={a.label: [None if r["diverged"] else r.get("held_out")
                                         for r in runs[j * len(every):(j + 1) * len(every)]]
                               for j, a in enumerate(finalists)})
        return chosen, rows, decision

    jobs.choose_on_validation = with_more_seeds
    code = cli_main(command)
    if code or "held_out" not in found:
        raise SystemExit(f"the run ended with {code} and no held-out decision")
    folder = Path(command[command.index("--out") + 1])
    record = json.loads((folder / "protocol.json").read_text())
    write_json(args.out, {"benchmark": "decision_seeds", "policysearch": policysearch.__version__,
                          "command": command, "exported_by_the_run": record["chosen"],
                          "registered_decision": record.get("held_out"), "comparison": record.get("comparison"),
                          **found})
    return 0


def report(args: argparse.Namespace) -> int:
    from policysearch.protocol.effort import BAR
    from policysearch.protocol.selection import decide

    out = []
    for path in args.files:
        run = json.loads(Path(path).read_text())
        a, b = run["finalists"]
        rows = run["held_out"]
        by_seeds = []
        for k in range(1, len(run["seeds"]) + 1):
            d = decide(run["task"], a, b, rows[a][:k], rows[b][:k], run["images"], run["seed"])
            at_bar = decide(run["task"], a, b, rows[a][:k], rows[b][:k], run["images"], run["seed"], BAR,
                            seed_error=True)
            by_seeds.append({"seeds": k, "difference": d["difference"], "exported": d["exported"],
                             "share_ahead_images": d["share_ahead"], "share_ahead": at_bar["share_ahead"], "bar": BAR,
                             "exported_at_bar": at_bar["exported"]})
        comparison = run.get("comparison") or {}
        kept = run["exported_by_the_run"]
        other = "learned" if kept == b else b  # the searched finalist is "learned" in the comparison
        test = (comparison.get("differences") or {}).get(other)
        out.append({"run": Path(path).stem, "finalists": [a, b], "images": run["images"], "by_seeds": by_seeds,
                    "test": {"exported": kept, "minus": other, "difference": test}})
        print(f"{Path(path).stem}: {a} - {b} over {run['images']} held-out images; on test {kept} - {other} = "
              + (f"{test['mean']:+.2f} [{test['low']:+.2f}, {test['high']:+.2f}]" if test else "not compared"),
              file=sys.stderr)
        for row in by_seeds:
            d = row["difference"]
            text = f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d else "no difference (diverged)"
            share = (f", ahead in {100 * row['share_ahead_images']:.0f} % of the image resamples, with a probability "
                     f"of {row['share_ahead']:.2f} counting seeds" if row["share_ahead"] is not None else "")
            print(f"  {row['seeds']} seed(s) per arm: {text}{share} -> exports {row['exported']} at 95 %, "
                  f"{row['exported_at_bar']} at {BAR:g} counting seeds", file=sys.stderr)
    record = {"benchmark": "decision_seeds_report", "runs": out}
    print(json.dumps(record))
    if args.out:
        from policysearch.files import write_json

        write_json(args.out, record)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    c = sub.add_parser("collect", help="resume a run (a copy) and train its finalists on more seeds")
    c.add_argument("--seeds", type=int, default=8, help="seeds per finalist, the re-ranking's included")
    c.add_argument("--out", required=True, help="the JSON of the finalists' held-out rows per seed")
    c.add_argument("command", nargs=argparse.REMAINDER, help="-- then the run's policysearch command, with --resume")
    r = sub.add_parser("report", help="the decision at each number of seeds, beside the run's test comparison")
    r.add_argument("files", nargs="+", help="collect's JSON files")
    r.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    return collect(args) if args.step == "collect" else report(args)


if __name__ == "__main__":
    raise SystemExit(main())
