"""The `compress` command: a teacher (a checkpoint, or --model with --weights), a plan searched
under a FLOPs / parameter / latency budget, the student distilled and compared with the teacher.
Classifiers and dense models (a ``unet`` on segmentation or restoration data) alike: students are
scored by the data's task metric (accuracy, mIoU, PSNR).

Every option and the teacher file are checked before the data is loaded; nothing is written
before the search starts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from policysearch.cli.options import data_name, data_option, emit_json, input_normalization, prepare_data
from policysearch.cli.searching import EXIT_INTERRUPTED, out_dir, search_command
from policysearch.errors import ConfigError, PolicySearchError


def load_teacher(path: str, trust_pickle: bool) -> tuple[Any, str | None, dict[str, Any]]:
    """The teacher module, its model name (None for a pickled module) and checkpoint info."""
    import torch

    from policysearch.checks import check_tensors
    from policysearch.errors import PolicyFormatError
    from policysearch.imports import first_line
    from policysearch.train.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
        return ckpt.build(), ckpt.model_name, {**ckpt.info, "input_shape": ckpt.input_shape}
    except PolicyFormatError:
        if not trust_pickle:
            raise
    print(f"warning: loading {path} as a pickled module runs code stored in the file; "
          "do this only for files you trust", file=sys.stderr)
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt file fails in many ways; say which file and why, in one line
        hint = (" (the module that defines the model's class must be importable: run from its folder or install "
                "it)" if isinstance(exc, (ModuleNotFoundError, AttributeError)) else "")
        raise PolicyFormatError(f"{path}: cannot be read as a pickled module ({type(exc).__name__}: "
                                f"{first_line(exc)}){hint}") from None
    if not isinstance(module, torch.nn.Module):
        raise PolicySearchError(f"{path}: holds a {type(module).__name__}, expected a torch.nn.Module")
    check_tensors(path, module.state_dict())  # finite weights, before any work
    return module, None, {}


def _compress_teacher(args: argparse.Namespace) -> tuple[Any, str | None, dict[str, Any], str]:
    """What ``--checkpoint`` or ``--model`` with ``--weights`` name, checked before any data is loaded:
    the checkpoint's module (None for --model: it is built for the data), its model name, the
    checkpoint's info, and how messages name the teacher."""
    if args.checkpoint and (args.model or args.weights):
        raise ConfigError("the teacher is --checkpoint FILE, or --model with --weights: not both")
    if not args.checkpoint and not (args.model and args.weights):
        raise ConfigError("name the teacher: --checkpoint FILE (from `policysearch train --save`), or your own "
                          "network as --model MODEL --weights FILE (a state dict)")
    if not args.checkpoint:
        from policysearch.models import resolve_model
        from policysearch.models.weights import read_weights

        read_weights(args.weights)  # a bad file fails before the data is loaded
        return None, resolve_model(args.model).name, {}, f"--model {args.model} --weights {args.weights}"
    teacher, model_name, info = load_teacher(args.checkpoint, args.trust_pickle)
    return teacher, model_name, info, f"--checkpoint {args.checkpoint}"


def _teacher_on_data(args: argparse.Namespace, teacher: Any, model_name: str | None, info: dict[str, Any],
                     what: str) -> tuple[Any, Any]:
    """The data, normalised as the teacher expects, and the teacher checked against it."""
    from policysearch.compression.teacher import check_teacher
    from policysearch.models.weights import recorded_normalization

    if teacher is None:  # --model with --weights: normalised as the file records, or as --normalize says
        from policysearch.models import build_for_data
        from policysearch.models.weights import load_weights

        data = prepare_data(args)
        teacher = build_for_data(model_name, data)  # class scores, or a dense model's maps for its task
        load_weights(teacher, args.weights)
    else:
        # A policysearch checkpoint that records nothing was trained standardized (the only way there
        # was); a pickled module (no model name) says nothing about its inputs.
        recorded = recorded_normalization(info)
        if recorded is None and model_name is None and args.normalize is None:
            raise ConfigError(f"{what} is a pickled module: it does not record how it expects its inputs; pass "
                              "--normalize none (raw [0, 1] pixels), standardize (the data's per-channel mean and "
                              "std), imagenet, or MEAN,STD")
        dataset = args.dataset or (info.get("dataset") or {}).get("name") or "digits"
        data = prepare_data(args, dataset, input_normalization(args, recorded, what))
        shape = info.get("input_shape")
        if shape is not None and tuple(shape) != tuple(data.input_shape):
            raise ConfigError(f"{data_option(args)} has images of shape {tuple(data.input_shape)}, but the teacher "
                              f"{args.checkpoint} takes {tuple(shape)}; pass the data it was trained on")
    check_teacher(teacher, data, what)
    return teacher, data


def cmd_compress(args: argparse.Namespace) -> int:
    import dataclasses

    import gymnasium as gym

    from policysearch.analysis.report import format_table
    from policysearch.compression.distill import finish
    from policysearch.files import write_json
    from policysearch.metrics import difference_unit
    from policysearch.search.controllers.registry import controller_info
    from policysearch.train.checkpoint import save_checkpoint

    teacher, model_name, info, what = _compress_teacher(args)
    named = args.dataset or (info.get("dataset") or {}).get("name") or "digits"
    out = out_dir(args, "compress", data_name(args) if args.data else named)
    teacher, data = _teacher_on_data(args, teacher, model_name, info, what)
    searches_plans = controller_info(args.controller).drives == "plan"
    student = report = None
    if searches_plans:  # the protocol: from the uniform plan, chosen on validation, compared on test
        from policysearch.protocol.compress import compress_model
        from policysearch.protocol.core import ProtocolResult

        protocol = compress_model(
            teacher, data, flops=args.flops, params=args.params, latency=args.latency,
            latency_batch=args.latency_batch, min_keep=args.min_keep, criterion=args.criterion, model_name=model_name,
            effort=args.effort, controller=args.controller, seeds=args.seeds, compass=_compass_options(args),
            finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
            compare=not args.no_compare, workers=args.workers, seed=args.seed, held_out=args.held_out, say=print)
        plan, student, report = protocol.artefact, protocol.student, protocol.report
        # plan.json, protocol.json (and comparison.png) as the other jobs write them; model.pt comes below, with
        # the data's record.
        ProtocolResult.save(protocol, out)
        if protocol.comparison is not None:
            print(format_table(protocol.table()))
        print(protocol.verdict["line"])
        summary_base: dict[str, Any] = {"controller": args.controller, "files": {"artefact": "plan.json"},
                                        "protocol": protocol.to_dict(), **protocol.search}
    else:
        _, result = search_command(
            args, data, lambda d: gym.make(
                "policysearch/Compress-v0", teacher=teacher, model_name=model_name, data=d, flops_target=args.flops,
                params_target=args.params, latency_target=args.latency, latency_batch=args.latency_batch,
                proxy=args.proxy, bn_batches=args.bn_batches, val_images=args.val_images,
                min_keep=args.min_keep, criterion=args.criterion, finetune_steps=args.finetune_steps,
                device=args.device, finetune_lr=args.finetune_lr, reward=args.reward, batch_size=args.batch_size,
                child_seed=args.child_seed),
            out, "plan.json")
        if result.summary["stopped_by"]:
            return EXIT_INTERRUPTED  # the plan so far is in the run folder; the final distillation waits
        plan = result.artefact
        summary_base = dict(result.summary)
        if args.rerank_top > 1:
            from policysearch.compression.pruning import rerank, score_metric, top_plans

            candidates = top_plans(result.episodes, args.rerank_top)
            print(f"re-ranking {len(candidates)} plans (the {args.rerank_top} best by the proxy, plus uniform if not "
                  f"among them) by {args.rerank_steps} distillation steps each ...")
            # Scored on the whole validation split, not the proxy's --val-images slice: at 1,000 images
            # the standard error (about 0.9 points at 91 %) exceeds the gaps between the best plans.
            ranked = rerank(candidates, teacher, data, args.rerank_steps, args.finetune_lr, seed=args.seed,
                            batch_size=args.batch_size)
            metric = score_metric(data)
            key = f"val_{metric}"  # val_accuracy, val_miou, val_psnr
            print(format_table([{"search rank": r["index"] + 1, f"val {metric}": r[key],
                                 "FLOPs": r["plan"].flops_fraction, "params": r["plan"].params_fraction}
                                for r in ranked]))
            best = ranked[0]
            plan = dataclasses.replace(best["plan"], provenance={
                **plan.provenance, "reranked": {"search_rank": best["index"] + 1, "steps": args.rerank_steps,
                                                key: best[key], "candidates": len(ranked)}})
            plan.save(out / "plan.json")
            summary_base["rerank"] = [{"search_rank": r["index"] + 1, key: r[key]} for r in ranked]
    if student is None or report is None:
        print(f"best plan keeps {plan.flops_fraction:.3f} of the FLOPs ({args.flops:g} asked); distilling it for "
              f"{args.finetune_epochs:g} epochs ...")
        student, report = finish(plan, teacher, data, args.finetune_epochs, args.finetune_lr, seed=args.seed,
                                 batch_size=args.batch_size)
    print(format_table(_card_rows(report)))
    metric = report["metric"]
    unit = difference_unit(metric)[1]
    print(f"test {metric} drop: {report[f'{metric}_drop_{unit}']:.2f} {unit}")
    save_checkpoint(out / "model.pt", student, model_name or type(teacher).__name__, data.input_shape,
                    data.output_size, {"dataset": data.describe(), "plan": plan.to_dict(), "comparison": report})
    summary = {**summary_base, "comparison": report, "files": {**summary_base["files"], "model": "model.pt"}}
    write_json(out / "summary.json", summary)
    print(f"wrote {out}/: plan.json, model.pt, summary.json"
          + (", protocol.json" if searches_plans else ", episodes.jsonl, search.png"))
    if model_name is not None:
        print(f"load it: policysearch.train.checkpoint.load_checkpoint('{out / 'model.pt'}').build()")
    else:  # a user's own architecture: policysearch cannot rebuild it by name
        print(f"load it: student = CompressionPlan.load('{out / 'plan.json'}').apply(your_model, example_batch); "
              f"student.load_state_dict(torch.load('{out / 'model.pt'}', weights_only=True)['state_dict'])")
    if args.json:
        emit_json(summary)
    return 0


_COST_ROWS = (("flops", "FLOPs"), ("params", "parameters"), ("file_bytes", "file bytes"),
              ("latency_ms_batch1", "CPU ms, batch 1"), ("latency_ms_batch64", "CPU ms, batch 64"))
_LABELS = {"macro_f1": "macro F1", "macro_precision": "macro precision", "macro_recall": "macro recall",
           "ece": "ECE", "nll": "NLL", "miou": "mIoU", "pixel_accuracy": "pixel accuracy", "psnr": "PSNR (dB)",
           "ssim": "SSIM", "mse": "MSE"}


def _card_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Teacher and student side by side: every test metric of their cards (the data's task's), then the costs."""
    quality = [(key, "test " + _LABELS.get(key[5:], key[5:])) for key in report["teacher"] if key.startswith("test_")]
    rows = []
    for key, label in (*quality, *_COST_ROWS):
        t, st = report["teacher"][key], report["student"][key]
        rows.append({"": label, "teacher": t, "student": st, "student / teacher": st / t if t else float("nan")})
    return rows


def _compass_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--local-*`` options given (the others come from --effort), for the compass search."""
    if args.controller != "local":
        return {}
    given = {"steps": args.local_steps, "seeds": args.local_seeds, "confirm_seeds": args.local_confirm_seeds,
             "confirm_steps": args.local_confirm_steps, "factor": args.local_factor, "rounds": args.local_rounds}
    return {k: v for k, v in given.items() if v is not None}
