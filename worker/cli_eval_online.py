"""`tierflow eval routing --mode online`: recorded prompts streamed through decide, judge and reflect.

For each of the policy targets (by default ten cost targets: at most 5%, 15%,
..., 95% of prompts above the small tier) the learner is fitted on the training
prompts and the test prompts are streamed in file order through
`routing.online.stream_prompts`, the same decide / judge / reflect code the
workers run, revealing only the outcomes of the tiers it called, with a reflect
run every `--reflect-every` prompts and `--explore` as the learning's
`explore_share` (a prompt's job id is its position in the stream, so the same
prompts may explore under every target). Each target gives one point (large
share, accuracy, cost); with the always-small and always-large ends they trace
the curve that `routing.metrics` summarises. With `--folds K` each fold of the
test file is streamed after fitting on the train files plus the other folds, and
the counts of the K streams are added up per target.

`pre` streams without the cascade; `combined` adds the cascade scorer on the
small model's recorded answer (an escalated prompt pays both calls). This module
must not import the store or the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierflow.providers.encoders import Encoder
from tierflow.providers.outcomes_data import TierModels
from tierflow.routing.errors import InputError
from tierflow.routing.learning import LearningSettings, RoutingTarget, TargetKind
from tierflow.routing.metrics import CurvePoint, PromptOutcomes, RoutingQuality, curve_quality
from tierflow.routing.offline_routers import LearnedRouter, RoutingRows, assign_folds
from tierflow.routing.online import OnlineRun, StreamedPrompt, first_fit, stream_prompts
from tierflow.worker.cli_eval_learned import LabelledFile, routing_rows

ONLINE_ROUTERS = (LearnedRouter.PRE, LearnedRouter.COMBINED)
MIN_SAMPLES = 30  # rows of a tier before the learner fits it; recorded files are small


@dataclass(frozen=True)
class OnlineOptions:
    reflect_every: int = 100
    targets: int = 10
    folds: int = 0
    seed: int = 0
    explore_share: float = LearningSettings.model_fields["explore_share"].default


@dataclass(frozen=True)
class OnlineLearning:
    """What reflect did over every stream of an online evaluation (all targets and folds)."""

    versions: int  # policy versions published, rollbacks included
    rollbacks: int


def cost_targets(count: int) -> list[RoutingTarget]:
    """`count` cost targets spread evenly over (0, 1): at most that share above the small tier."""
    return [RoutingTarget(kind=TargetKind.COST, value=(i + 0.5) / count) for i in range(count)]


def streamed(rows: RoutingRows, outcomes: PromptOutcomes, with_answers: bool) -> list[StreamedPrompt]:
    prompt = rows.prompt
    return [
        StreamedPrompt(
            features=prompt[i],
            answer=rows.answer[i] if with_answers and rows.answer is not None else None,
            small_correct=bool(outcomes.small_quality[i]),
            large_correct=bool(outcomes.large_quality[i]),
            small_cost=float(outcomes.small_cost[i]),
            large_cost=float(outcomes.large_cost[i]),
        )
        for i in range(rows.n)
    ]


def online_quality(
    router: LearnedRouter,
    train: list[tuple[LabelledFile, PromptOutcomes]],
    test: tuple[LabelledFile, PromptOutcomes],
    tiers: TierModels,
    encoder: Encoder | None,
    options: OnlineOptions,
) -> tuple[RoutingQuality, OnlineLearning]:
    """The online curve and its figures for `router` on the test file, and what reflect did."""
    if router not in ONLINE_ROUTERS:
        names = ", ".join(r.value for r in ONLINE_ROUTERS)
        raise InputError("--router", 0, "router", f"--mode online runs the learned routers {names}")
    answers = router is LearnedRouter.COMBINED
    train_prompts = [
        prompt
        for labelled, outcomes in train
        for prompt in streamed(routing_rows(labelled, tiers, encoder, router), outcomes, answers)
    ]
    test_prompts = streamed(routing_rows(test[0], tiers, encoder, router), test[1], answers)
    splits = _splits(train_prompts, test_prompts, options)
    encoder_name = None if encoder is None else encoder.name
    settings = [
        LearningSettings(
            target=target,
            min_samples=MIN_SAMPLES,
            min_version_samples=MIN_SAMPLES,
            explore_share=options.explore_share,
        )
        for target in cost_targets(options.targets)
    ]
    fitted = [first_fit(fit, settings[0], encoder_name) for fit, _ in splits]  # once per split
    points, every_run = [], []
    for learning in settings:
        runs = [
            stream_prompts(fit, stream, learning, options.reflect_every, encoder_name, first)
            for (fit, stream), first in zip(splits, fitted, strict=True)
        ]
        points.append(_point(runs))
        every_run += runs
    reflected = OnlineLearning(sum(r.versions for r in every_run), sum(r.rollbacks for r in every_run))
    return _quality(test[1], points), reflected


def _splits(
    train: list[StreamedPrompt], test: list[StreamedPrompt], options: OnlineOptions
) -> list[tuple[list[StreamedPrompt], list[StreamedPrompt]]]:
    """(fit on, stream) pairs: the train files and the whole test file, or one pair per fold."""
    if not options.folds:
        if not train:
            raise InputError("--train", 0, "file", "--mode online needs --train files or --folds")
        return [(train, test)]
    if options.folds < 2 or options.folds > len(test):
        raise InputError("--folds", 0, "folds", f"must be 0 or 2 to {len(test)} (the test rows)")
    folds = assign_folds(len(test), options.folds, options.seed)
    return [
        (
            train + [p for p, f in zip(test, folds, strict=True) if f != fold],
            [p for p, f in zip(test, folds, strict=True) if f == fold],
        )
        for fold in range(options.folds)
    ]


def _point(runs: list[OnlineRun]) -> CurvePoint:
    prompts = sum(run.prompts for run in runs)
    large = sum(run.large_calls for run in runs)
    correct = sum(run.correct for run in runs)
    return CurvePoint(large / prompts, correct / prompts, sum(run.cost_usd for run in runs))


def _quality(outcomes: PromptOutcomes, points: list[CurvePoint]) -> RoutingQuality:
    """The figures of the traced points, between always-small and always-large."""
    small, large = outcomes.small_accuracy, outcomes.large_accuracy
    ends = [
        CurvePoint(0.0, small, float(outcomes.small_cost.sum())),
        CurvePoint(1.0, large, float(outcomes.large_cost.sum())),
    ]
    curve = tuple(sorted([*points, *ends], key=lambda p: (p.large_share, p.cost_usd)))
    return curve_quality(curve, small, large, float(outcomes.large_cost.sum()))
