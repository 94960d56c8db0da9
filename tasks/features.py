"""The learned scorers' inputs, computed the same way for classify, aggregate and reflect.

A job's prompt features are its cheap text features plus, when the policy's
learning names an encoder, its embedding (cached on disk by the runtime's
encoder). An answer's features come from `routing.answer_features`. Every caller
goes through here, so training and scoring can never see different features. When
the encoder fails (the embeddings extra is missing, the API is down), classify
routes by the rules and the aggregate judges without the cascade: a job never
stops because learning is unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from tierflow.routing.analysis import job_text
from tierflow.routing.answer_features import answer_features
from tierflow.routing.experts import ExpertOutcome
from tierflow.routing.grades import learning_target
from tierflow.routing.kinds.spec import KindSpec
from tierflow.routing.learning import LearnedRouting, cascade_gain
from tierflow.routing.policy import Policy
from tierflow.routing.reflect import OutcomeRow
from tierflow.routing.scorers import Matrix, Vector, prompt_features
from tierflow.routing.states import Tier
from tierflow.routing.verdict import answer_text
from tierflow.store.outcomes import JudgedAttempt
from tierflow.tasks.runtime import Runtime

log = logging.getLogger(__name__)


def prompt_matrix(runtime: Runtime, encoder: str | None, texts: list[str]) -> Matrix:
    """One row of prompt features per text."""
    embeddings = None
    if encoder is not None and texts:
        embeddings = np.asarray(runtime.text_encoder(encoder).encode(texts), dtype=np.float64)
    return prompt_features(texts, embeddings)


def job_features(
    runtime: Runtime, policy: Policy, kind: KindSpec, payload: dict[str, object]
) -> Vector | None:
    """The job's prompt features for the policy's learned routing of its class; None when it has
    none, or when its encoder fails: a job never stops because learning is unavailable."""
    learned = policy.learned.get(kind.name)
    if learned is None:
        return None
    try:
        row: Vector = prompt_matrix(runtime, learned.encoder, [job_text(kind, payload)])[0]
    except Exception as exc:  # an encoder that cannot load or answer: the rules route instead
        log.warning("learned scorers skipped: encoder %s failed: %s", learned.encoder, exc)
        return None
    return row


def attempt_cascade_gain(
    runtime: Runtime,
    policy: Policy,
    kind: KindSpec,
    payload: dict[str, object],
    outcomes: list[ExpertOutcome],
) -> float | None:
    """The learned cascade's gain for this attempt's answer; None without a cascade, an answer or
    the prompt's features."""
    learned: LearnedRouting | None = policy.learned.get(kind.name)
    answer = answer_text(kind, outcomes)
    if learned is None or learned.cascade is None or answer is None:
        return None
    prompt = job_features(runtime, policy, kind, payload)
    if prompt is None:
        return None
    return cascade_gain(learned, prompt, answer_features(job_text(kind, payload), answer), policy.ladder[-1])


def outcome_rows(
    runtime: Runtime,
    encoder: str | None,
    records: list[JudgedAttempt],
    bars: Mapping[str, float] | None = None,
) -> list[OutcomeRow]:
    """The learner's rows for judged attempts of the kinds in force: prompt features for all of them
    in one encoder pass; each row's target is its graded quality, or with a quality bar for its
    kind (`bars`, LearningSettings.quality_bar) whether the grade reaches it."""
    bars = bars or {}
    usable = [r for r in records if r.kind in runtime.kinds and r.tier in Tier._value2member_map_]
    kinds = [runtime.kinds.get(r.kind) for r in usable]
    texts = [job_text(kind, r.payload) for kind, r in zip(kinds, usable, strict=True)]
    features = prompt_matrix(runtime, encoder, texts)
    rows = []
    for index, (record, kind, text) in enumerate(zip(usable, kinds, texts, strict=True)):
        answer = answer_text(kind, _outcomes(kind, record))
        bar = bars.get(kind.name)
        grade = record.grade
        rows.append(
            OutcomeRow(
                job_id=record.job_id,
                kind=kind.name,
                tier=Tier(record.tier),
                attempt=record.attempt,
                good=record.good if grade is None or bar is None else grade.good(bar),
                features=features[index],
                answer=None if answer is None else answer_features(text, answer),
                action=record.verdict,
                cost_usd=record.cost_usd,
                latency_s=record.latency_s,
                policy_version=record.policy_version,
                quality=None if grade is None else learning_target(grade, bar),
                source="verdict" if grade is None else grade.source.value,
            )
        )
    return rows


def _outcomes(kind: KindSpec, record: JudgedAttempt) -> list[ExpertOutcome]:
    outcomes = []
    for name, (output, confidence, error) in record.outputs.items():
        known = kind.expert(name)
        outcomes.append(ExpertOutcome(name, known.uses_model if known else True, output, confidence, error))
    return outcomes
