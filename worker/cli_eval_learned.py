"""The learned routers of `tierflow eval routing`: features of recorded prompts, fitting, scoring, paying.

Owns turning recorded prompts (`providers.outcomes_data`) into `RoutingRows`
(cheap prompt features, the prompt's embedding through the on-disk encoder cache,
the small model's answer features), scoring the test file with a learned router
(`routing.offline_routers`: fitted on the train files, or k-fold on the test file
plus the train files), and what a cascade pays: the small call always, and the
large one as well for an escalated prompt. With `--rank gain-per-cost` the rows
also carry token counts and list prices (`routing.offline_routers.CallCosts`), so the
router can divide its gain by the escalation's expected cost. A local encoder that
cannot load its model is a `ConfigError` (one line, exit 1), not a traceback.
This module must not import the store or the tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tierflow.providers.encoders import CachedEncoder, Encoder, encode_in_batches
from tierflow.providers.outcomes_data import (
    UNRECORDED_OUTPUT_TOKENS,
    RecordedPrompt,
    TierModels,
    require_responses,
)
from tierflow.providers.pricing import Price
from tierflow.providers.server.wire import WireError
from tierflow.providers.tokens import count_tokens
from tierflow.routing.answer_features import ANSWER_FEATURES, answer_feature_matrix
from tierflow.routing.errors import ConfigError, InputError
from tierflow.routing.knn import fit_knn
from tierflow.routing.metrics import PromptOutcomes, RoutingQuality, curve_quality, sweep_curve
from tierflow.routing.offline_routers import (
    CallCosts,
    LearnedRouter,
    Ranking,
    RoutingRows,
    assign_folds,
    cross_validated_scores,
    learned_scores,
    stack_rows,
)
from tierflow.routing.scorers import prompt_features
from tierflow.worker.cli_eval import DEFAULT_CACHE, EncoderKind, make_encoder

ENCODE_SLICE = 512  # texts per cache look-up and encoder call


class RoutingEncoder(str, Enum):
    """How prompts are embedded for the learned routers; none = cheap features only."""

    LOCAL = "local"
    OPENAI = "openai"
    NONE = "none"


@dataclass(frozen=True)
class EncoderChoice:
    kind: RoutingEncoder = RoutingEncoder.LOCAL
    model: str = "text-embedding-3-small"
    cache_dir: Path = DEFAULT_CACHE
    batch_size: int = 64

    def build(self) -> Encoder | None:
        """The cached encoder, or None for cheap features only; nothing is loaded until it encodes."""
        if self.kind is RoutingEncoder.NONE:
            return None
        inner = make_encoder(EncoderKind(self.kind.value), self.model, self.batch_size)
        return CachedEncoder(inner, self.cache_dir)


@dataclass(frozen=True)
class LabelledFile:
    """The recorded prompts of one file, and where they came from (for errors)."""

    path: Path
    records: list[RecordedPrompt]


def _embed(encoder: Encoder | None, prompts: list[str]) -> NDArray[np.float64]:
    if encoder is None:
        return np.zeros((len(prompts), 0), dtype=np.float64)
    try:
        return encode_in_batches(encoder, prompts, ENCODE_SLICE).astype(np.float64)
    except WireError as exc:  # the local model's loader: the embeddings extra is missing
        raise ConfigError("--encoder", f"{encoder.name} cannot be loaded: {exc.message}") from None


def _output_tokens(records: list[RecordedPrompt], model: str) -> NDArray[np.float64]:
    responses = (record.outcomes[model].response for record in records)
    counts = [UNRECORDED_OUTPUT_TOKENS if text is None else count_tokens(text) for text in responses]
    return np.array(counts, dtype=np.float64)


def call_costs(records: list[RecordedPrompt], tiers: TierModels, prices: dict[str, Price]) -> CallCosts:
    """Token counts and the large tier's list prices of each prompt, for the gain-per-cost ranking."""
    large = prices.get(tiers.large)
    if large is None:
        raise InputError("--price", 0, tiers.large, f"no list price; pass --price '{tiers.large}=IN,OUT'")
    prompt_tokens = np.array([count_tokens(record.prompt) for record in records], dtype=np.float64)
    return CallCosts(
        prompt_tokens=prompt_tokens,
        small_output_tokens=_output_tokens(records, tiers.small),
        large_input_usd=prompt_tokens * large.input_per_million / 1e6,
        large_output_usd_per_token=np.full(len(records), large.output_per_million / 1e6),
        large_output_tokens=_output_tokens(records, tiers.large),
    )


def routing_rows(
    labelled: LabelledFile,
    tiers: TierModels,
    encoder: Encoder | None,
    router: LearnedRouter,
    prices: dict[str, Price] | None = None,
) -> RoutingRows:
    """The features and outcomes of a file's prompts, with `call_costs` when `prices` are given.

    Outcomes are qualities on [0, 1]: correctness as 0 or 1, a graded file's scores by its
    range, so the scorers learn the expected quality and correctness and graded files mix.

    Raises:
        InputError: `router` needs small answers the file lacks, or a tier has no price.
        ConfigError: the encoder cannot be loaded.
    """
    records = labelled.records
    prompts = [record.text for record in records]
    cheap = prompt_features(prompts, None)
    embedding = _embed(encoder, prompts)
    answer = None
    if router.needs_answers:
        needed_by = f"--router {router.value}"
        answers = require_responses(records, labelled.path, tiers.small, needed_by)
        answer = answer_feature_matrix(prompts, answers).reshape(len(prompts), len(ANSWER_FEATURES))
    return RoutingRows(
        cheap=cheap,
        embedding=embedding,
        answer=answer,
        small_good=np.array([r.normalised_quality(tiers.small) for r in records], dtype=np.float64),
        large_good=np.array([r.normalised_quality(tiers.large) for r in records], dtype=np.float64),
        costs=None if prices is None else call_costs(records, tiers, prices),
    )


def learned_test_scores(
    router: LearnedRouter,
    train: list[LabelledFile],
    test: LabelledFile,
    tiers: TierModels,
    encoder: Encoder | None,
    folds: int = 0,
    seed: int = 0,
    rank: Ranking = Ranking.GAIN,
    prices: dict[str, Price] | None = None,
) -> NDArray[np.float64]:
    """The test prompts' scores: fitted on the train files, or k-fold (`folds` >= 2) on test + train.

    With `rank` gain-per-cost, `prices` (the tiers' list prices) are required: the cost
    model is fitted on the same rows as the scorers, never on the rows it scores.
    """
    if rank is Ranking.GAIN_PER_COST and prices is None:
        raise ValueError("the gain-per-cost ranking needs the tiers' prices")
    priced = prices if rank is Ranking.GAIN_PER_COST else None
    train_rows = [routing_rows(part, tiers, encoder, router, priced) for part in train if part.records]
    test_rows = routing_rows(test, tiers, encoder, router, priced)
    stacked = _stack(train_rows)
    if folds:
        if folds < 2 or folds > test_rows.n:
            raise InputError("--folds", 0, "folds", f"must be 0 or 2 to {test_rows.n} (the test rows)")
        return cross_validated_scores(router, stacked, test_rows, folds, seed, rank)
    if stacked is None:
        raise InputError("--train", 0, "file", f"--router {router.value} needs --train files or --folds")
    return learned_scores(router, stacked, test_rows, seed, rank)


def _stack(parts: list[RoutingRows]) -> RoutingRows | None:
    return stack_rows(parts) if parts else None


def paid_outcomes(outcomes: PromptOutcomes, router: LearnedRouter) -> PromptOutcomes:
    """What each prompt costs as routed: after a small answer, escalating pays the large call on top."""
    if not router.needs_answers:
        return outcomes
    return dataclasses.replace(outcomes, large_cost=outcomes.small_cost + outcomes.large_cost)


def learned_quality(
    outcomes: PromptOutcomes, router: LearnedRouter, scores: NDArray[np.float64]
) -> RoutingQuality:
    """The figures of `scores` with the router's costs; the cost ratio is against plain always-large."""
    paid, always_large = paid_outcomes(outcomes, router), float(outcomes.large_cost.sum())
    return curve_quality(
        sweep_curve(paid, scores),
        paid.small_accuracy,
        paid.large_accuracy,
        always_large if always_large > 0 else None,
    )


def _qualities(records: list[RecordedPrompt], tiers: TierModels) -> tuple[NDArray[np.float64], ...]:
    small = [record.normalised_quality(tiers.small) for record in records]
    large = [record.normalised_quality(tiers.large) for record in records]
    return np.array(small, dtype=np.float64), np.array(large, dtype=np.float64)


def knn_test_scores(
    train: list[LabelledFile],
    test: LabelledFile,
    tiers: TierModels,
    encoder: Encoder | None,
    folds: int = 0,
    seed: int = 0,
) -> NDArray[np.float64]:
    """The test prompts' kNN scores (`routing.knn`): neighbours from the train files, or with
    `folds` >= 2 from the test file's other folds as well. Qualities are mapped to [0, 1], so
    correctness and graded files mix."""
    if encoder is None:
        raise InputError("--encoder", 0, "encoder", "--router knn needs prompt embeddings, not none")
    records = [record for part in train for record in part.records]
    embedded = _embed(encoder, [record.text for record in [*records, *test.records]])
    train_x, test_x = embedded[: len(records)], embedded[len(records) :]
    train_small, train_large = _qualities(records, tiers)
    test_small, test_large = _qualities(test.records, tiers)
    if not folds:
        if not records:
            raise InputError("--train", 0, "file", "--router knn needs --train files or --folds")
        return fit_knn(train_x, train_small, train_large).scores(test_x)
    if folds < 2 or folds > len(test.records):
        raise InputError("--folds", 0, "folds", f"must be 0 or 2 to {len(test.records)} (the test rows)")
    fold = assign_folds(len(test.records), folds, seed)
    scores = np.zeros(len(test.records), dtype=np.float64)
    for index in range(folds):
        held, rest = fold == index, fold != index
        router = fit_knn(
            np.vstack([train_x, test_x[rest]]),
            np.concatenate([train_small, test_small[rest]]),
            np.concatenate([train_large, test_large[rest]]),
        )
        scores[held] = router.scores(test_x[held])
    return scores
