"""`find_augmentation` and `find_schedule`: the whole protocol on your data and model, one call each.

part of the validation images held back (`policysearch.protocol.selection`) -> search (budget children
of the full target length, scored on the other validation images) -> the top candidates and the
hand-made baselines re-trained on fresh seeds and ranked there -> the held-out images decide between the
best searched candidate and the best baseline -> the choice compared with every baseline on the test
split over paired seeds -> the best of {searched, baselines} exported, with a one-line verdict. The
CLI's ``augment`` and ``schedule`` call these.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from policysearch.data import DeviceData
from policysearch.errors import ConfigError, SearchInterrupted
from policysearch.files import check_output_dir
from policysearch.models import resolve_model
from policysearch.policies.augment import AugmentPolicy, load_policy
from policysearch.policies.schedule import LearnedSchedule, load_schedule
from policysearch.protocol.core import (
    Arm,
    ProtocolResult,
    choose_on_validation,
    compare_on_test,
    estimate,
    verdict_line,
)
from policysearch.protocol.effort import plan_for
from policysearch.protocol.selection import HELD_OUT, HELD_OUT_SEED, bar_text, hold_out
from policysearch.protocol.trainings import Ledger
from policysearch.search.driver import run_search
from policysearch.search.vecenv import Budget
from policysearch.tasks import get_task
from policysearch.train.trainer import TrainConfig, training_steps

__all__ = ["AUGMENT_BASELINES", "SCHEDULE_BASELINES", "find_augmentation", "find_schedule"]

#: The hand-made policies a searched one must beat on classification data (none: the floor; the usual
#: recipes above it); each task names its own (`policysearch.tasks.Task.augment_baselines`).
AUGMENT_BASELINES = ("none", "cropflip", "erasing", "trivial")
#: The hand-made schedules a searched one must beat, at the model's default peak LR.
SCHEDULE_BASELINES = ("onecycle", "cosine", "linear")


def find_augmentation(data: DeviceData, model: Any = None, *, epochs: float = 20, effort: str = "standard",
                      controller: str | None = None, budget: int | None = None, top: int | None = None,
                      rerank_seeds: int | None = None, seeds: int | None = None, decision_seeds: int | None = None,
                      decision_confidence: float | None = None,
                      baselines: Sequence[str] | None = None, compare: bool = True, schedule: str = "cosine",
                      segments: int = 4, space: str = "full", reward_metric: str | None = None,
                      config: TrainConfig | None = None, out: str | Path | None = None, resume: bool = False,
                      overwrite: bool = False, workers: int = 1, seed: int = 0, budget_seconds: float | None = None,
                      progress: bool = True, say: Callable[[str], None] | None = None,
                      env_options: dict[str, Any] | None = None, held_out: float = HELD_OUT) -> ProtocolResult:
    """Find an augmentation policy for `data` and `model` that beats the hand-made ones, or keep the best
    of those (see the module docstring; `policysearch.protocol.effort` for the defaults' evidence).

    Args:
        data: the prepared data (`policysearch.data.prepare`); its test split is read only at the end.
        model: any form `policysearch.models.resolve_model` takes (None: `config`'s, else "cnn").
        epochs: the target training length: every child, candidate and baseline trains this long.
        effort: "quick", "standard" or "thorough" (`policysearch.protocol.effort.PLANS`).
        controller, budget, top, rerank_seeds, seeds, decision_seeds, decision_confidence: override the effort's
            plan (`policysearch.protocol.effort.Plan`).
        baselines: hand-made policies (names or files) compared and possibly exported (None: the data's task's,
            `policysearch.tasks.Task.augment_baselines`: none, cropflip, erasing, trivial for classification;
            none, cropflip, cropflip-jitter, trivial for segmentation and restoration).
        compare: run the final paired comparison on the test split.
        schedule: the LR schedule every training follows.
        segments: policy decisions per training (Augment-v1's episode length).
        space: Augment-v1's search space ("full" or "small").
        reward_metric: what the search and the re-ranking maximise on validation (None: the task's default:
            accuracy, miou, psnr); the test comparison reports the task's default metric.
        config: training settings (model, batch size, optimizer, ...); `model` overrides its model.
        out: the folder (``search/`` inside, the exported ``policy.json``, ``protocol.json``,
            ``trainings.jsonl``); None keeps everything in memory.
        resume: continue a cut run in `out` (the search resumes; finished trainings are read back).
        overwrite: replace what `out` holds.
        workers: children and trainings at once (worker processes).
        seed: the search's seed; the re-ranking and the comparison use seeds derived from it.
        budget_seconds: also stop the search after this many seconds.
        progress: progress bars; `say` receives the protocol's lines (default: stderr).
        env_options: further Augment-v1 arguments for the search (ops, ops_per_sample, magnitude_scale, ...).
        held_out: the fraction of the validation images the search never scores; they decide between the best
            searched candidate and the best baseline (`policysearch.protocol.selection`). 0: none held out, the
            best validation mean is exported (the protocol before the held-out decision).
    """
    baselines = tuple(baselines) if baselines is not None else get_task(data.task).augment_baselines
    policies = [load_policy(b) for b in baselines]  # bad names fail before any work
    config = _config(config, model)
    lr_schedule = load_schedule(schedule, base_lr=config.lr)
    return _run("augment", data, model, epochs=epochs, effort=effort, controller=controller, budget=budget, top=top,
                rerank_seeds=rerank_seeds, seeds=seeds, decision_seeds=decision_seeds,
                decision_confidence=decision_confidence, compare=compare, config=config,
                out=out, resume=resume,
                overwrite=overwrite, workers=workers, seed=seed, budget_seconds=budget_seconds, progress=progress,
                say=say, reward_metric=reward_metric, held_out=held_out,
                env_kwargs={"lr_schedule": schedule, "space": space, "episode_length": segments,
                            **(env_options or {})},
                baselines=[(label, p, lr_schedule, p) for label, p in zip(baselines, policies)],
                candidate=lambda artefact: (artefact, lr_schedule), artefact_name="policy.json", segments=segments)


def find_schedule(data: DeviceData, model: Any = None, *, epochs: float = 20, effort: str = "standard",
                  controller: str | None = None, budget: int | None = None, top: int | None = None,
                  rerank_seeds: int | None = None, seeds: int | None = None, decision_seeds: int | None = None,
                  decision_confidence: float | None = None, baselines: Sequence[str] = SCHEDULE_BASELINES,
                  compare: bool = True, augment: str = "none",
                  segments: int = 1, base: str = "onecycle", scale: float = 4.0, reward_metric: str | None = None,
                  config: TrainConfig | None = None, out: str | Path | None = None, resume: bool = False,
                  overwrite: bool = False, workers: int = 1, seed: int = 0, budget_seconds: float | None = None,
                  progress: bool = True, say: Callable[[str], None] | None = None,
                  env_options: dict[str, Any] | None = None, held_out: float = HELD_OUT) -> ProtocolResult:
    """Find an LR schedule for `data` and `model` that beats onecycle, cosine and linear decay at the
    model's default peak, or keep the best of those. The search scales `base` by ``scale ** a`` per
    segment (Schedule-v1; one segment by default: the peak LR); its candidates are exported as open-loop
    `LearnedSchedule` files. Arguments as in `find_augmentation` (`augment`: the policy every training uses;
    `env_options`: further Schedule-v1 arguments, e.g. ``peak``).
    """
    policy = load_policy(augment)
    config = _config(config, model)
    named = [(label, load_schedule(label, base_lr=config.lr)) for label in baselines]
    return _run("schedule", data, model, epochs=epochs, effort=effort, controller=controller, budget=budget,
                top=top, rerank_seeds=rerank_seeds, seeds=seeds, decision_seeds=decision_seeds,
                decision_confidence=decision_confidence, compare=compare,
                config=config, out=out,
                resume=resume, overwrite=overwrite, workers=workers, seed=seed, budget_seconds=budget_seconds,
                progress=progress, say=say, reward_metric=reward_metric, held_out=held_out,
                env_kwargs={"augment": augment, "base": base, "scale": scale, "episode_length": segments,
                            **(env_options or {})},
                baselines=[(label, policy, schedule, schedule) for label, schedule in named],
                candidate=lambda artefact: (policy, artefact), artefact_name="schedule.json", segments=segments)


def _config(config: TrainConfig | None, model: Any) -> TrainConfig:
    if config is None:
        return TrainConfig(model=model if model is not None else "cnn")
    return config if model is None or resolve_model(model).name == config.model else dataclasses.replace(
        config, model=resolve_model(model).name, optimizer=None, lr=None)


def _run(job: str, data: DeviceData, model: Any, *, epochs: float, effort: str, controller: str | None,
         budget: int | None, top: int | None, rerank_seeds: int | None, seeds: int | None,
         decision_seeds: int | None, decision_confidence: float | None, compare: bool,
         config: TrainConfig | None, out: str | Path | None, resume: bool, overwrite: bool, workers: int, seed: int,
         budget_seconds: float | None, progress: bool, say: Callable[[str], None] | None, reward_metric: str | None,
         held_out: float, env_kwargs: dict[str, Any], baselines: list[tuple[str, Any, Any, Any]],
         candidate: Callable[[Any], tuple[Any, Any]], artefact_name: str, segments: int) -> ProtocolResult:
    say = say or (lambda line: print(line, file=sys.stderr))
    if not epochs > 0:
        raise ConfigError(f"epochs is {epochs!r}: the target training length, expected a positive number")
    plan = plan_for(job, effort, controller=controller, budget=budget, top=top, rerank_seeds=rerank_seeds,
                    seeds=seeds, decision_seeds=decision_seeds, decision_confidence=decision_confidence)
    task = get_task(data.task)
    reward_metric = task.reward_metric(reward_metric)  # one this task measures, before any work
    config = _config(config, model)
    folder = check_output_dir(out, "out") if out is not None else None
    held = None
    if held_out:  # the search and the re-ranking's scores see `data`'s other validation images only
        data, held = hold_out(data, held_out, seed + HELD_OUT_SEED)
    steps = training_steps(data, config.batch_size, epochs)
    if steps < segments:
        raise ConfigError(f"{steps} training steps cannot hold {segments} segments; train longer or use fewer")
    finalists = 2 * (plan.finalist_seeds - plan.rerank_seeds) if held is not None and plan.top and baselines else 0
    trainings = plan.budget + (plan.top + len(baselines)) * plan.rerank_seeds + finalists + (
        (1 + len(baselines)) * plan.seeds if compare else 0)
    cost = estimate(data, config, epochs, trainings)
    say(f"{job}: {plan.controller} searches {plan.budget} children of {epochs:g} epochs, the top {plan.top} and "
        f"{len(baselines)} baselines are re-ranked on {plan.rerank_seeds} fresh seed(s)"
        + (f", the best of each on {plan.finalist_seeds} for the held-out decision" if finalists else "")
        + (f" (the searched one exported when {bar_text(plan.decision_confidence, plan.finalist_seeds >= 2)})"
           if held_out and plan.top else "")
        + (f", then {1 + len(baselines)} arms x {plan.seeds} paired seeds on the test split" if compare else "")
        + f": {trainings} trainings, about {_duration(cost['seconds'] / max(1, workers))} here, "
        f"{cost['train_flops'] / 1e12:.3g} training TFLOPs")
    if held is not None:
        say(f"validation: {len(data.y_val)} images scored by the search and the re-ranking, {len(held.y_val)} held "
            "out to decide between the best searched candidate and the best baseline")
    env_id = "policysearch/Augment-v1" if job == "augment" else "policysearch/Schedule-v1"
    env = gym.make(env_id, data=data, model=config.model, steps_per_segment=steps // segments,
                   batch_size=config.batch_size, weight_decay=config.weight_decay,
                   label_smoothing=config.label_smoothing, amp=config.amp, reward_metric=reward_metric,
                   weights=config.weights, **({"lr": config.lr, "optimizer": config.optimizer} if job == "augment"
                                              else {"optimizer": config.optimizer}),
                   **env_kwargs)
    result = run_search(env, plan.controller, Budget(child_trainings=plan.budget, seconds=budget_seconds),
                        None if folder is None else folder / "search", seed=seed, progress=progress,
                        resume=resume, overwrite=overwrite, workers=workers,
                        artefact_name="policy.json" if job == "augment" else "schedule.json")
    if result.summary.get("stopped_by"):
        where = f"; continue with the same command and --resume ({folder})" if folder is not None else ""
        raise SearchInterrupted(f"stopped by {result.summary['stopped_by']} during the search{where}")
    base_env = env.unwrapped
    scored = sorted((e for e in result.episodes if e["score"] is not None and not e["diverged"]),
                    key=lambda e: -e["score"])
    distinct, seen = [], set()
    for episode in scored:  # distinct candidates: two episodes with the same artefact are one candidate
        artefact = base_env.export(episode["steps"], {**result.artefact.provenance,
                                                      "chosen_episode": episode["episode"]})
        saved = artefact.to_dict()
        text = repr(saved["body"] if "body" in saved else {k: v for k, v in saved.items() if k != "provenance"})
        if text not in seen:
            seen.add(text)
            distinct.append((episode, artefact))
        if len(distinct) == plan.top:
            break
    arms = [Arm(f"learned #{k + 1}" if len(distinct) > 1 else "learned", *candidate(artefact), searched=True,
                artefact=artefact, search_score=float(e["score"])) for k, (e, artefact) in enumerate(distinct)]
    base_arms = [Arm(label, aug, sched, searched=False, artefact=art) for label, aug, sched, art in baselines]
    ledger = Ledger(folder, data, config, epochs, workers, say, held=held)
    chosen, ranking, decision = choose_on_validation(ledger, [*arms, *base_arms], plan.rerank_seeds, seed,
                                                     reward_metric, plan.finalist_seeds, plan.decision_confidence)
    if decision is not None and decision["difference"] is not None:
        d = decision["difference"]
        say(f"held-out images: {decision['searched']} - {decision['baseline']} = {d['mean']:+.2f} "
            f"[{d['low']:+.2f}, {d['high']:+.2f}] {decision['unit']} of {decision['metric']} over {d['images']} images"
            f" ({decision['seeds']} seed(s) per arm; share ahead {decision['share_ahead']:.2f}; the bar: "
            f"{decision['bar']})")
    say(f"chosen on validation: {chosen.label} ({'searched' if chosen.searched else 'hand-made'})")
    if chosen.searched:  # the comparison and the files call the searched choice "learned"
        chosen = dataclasses.replace(chosen, label="learned")
    others = base_arms
    if not chosen.searched and arms:  # the table still shows what the search found, as "learned"
        best = max(arms, key=lambda a: next(r["val_mean"] for r in ranking if r["arm"] == a.label))
        others = [dataclasses.replace(best, label="learned"), *base_arms]
    comparison = compare_on_test(ledger, chosen, others, plan.seeds, seed, task.default_metric) if compare else None
    verdict = verdict_line(chosen, comparison, ranking, decision)
    exported = _exported(chosen, job, result, ranking, verdict)
    search_cost = {k: result.summary[k] for k in ("child_trainings", "train_flops", "wall_seconds")}
    protocol = ProtocolResult(job, exported, chosen.label, verdict, ranking, comparison,
                              {"search": search_cost, "trainings": ledger.summary()}, plan,
                              search={k: result.summary.get(k) for k in ("controller", "episodes", "best", "env")},
                              estimate=cost, decision=decision, artefact_name=artefact_name)
    if folder is not None:
        protocol.save(folder)
    return protocol


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _exported(chosen: Arm, job: str, result: Any, ranking: list[dict[str, Any]], verdict: dict[str, Any]) -> Any:
    """A copy of the chosen arm's artefact, its provenance saying how it was chosen."""
    artefact = chosen.artefact
    prov = {**(artefact.provenance or {}), **{k: v for k, v in result.artefact.provenance.items()
                                              if k in ("dataset", "dataset_fingerprint", "model", "classes", "task",
                                                       "label_map", "normalization", "env_id")},
            "protocol": {"job": job, "chosen": chosen.label, "searched": chosen.searched, "verdict": verdict["line"],
                         "validation": {r["arm"]: r["val_mean"] for r in ranking}}}
    copy = type(artefact).from_dict({**artefact.to_dict(), "provenance": prov})
    if isinstance(copy, (AugmentPolicy, LearnedSchedule)) and chosen.searched:
        copy = type(copy).from_dict({**copy.to_dict(), "name": "learned"})
    return copy
