"""Recorded model outcomes (files shaped like ../shared/data/routellm) read into plain data.

Owns reading `{"id", "source", "category", "prompt", "turns"?, "reference"?, "outcomes":
{model: {"correct": bool | "score": number, "response"?: str}}}` JSON Lines (one file
records `correct` throughout or a graded `score` throughout, on a range given or read
from its scores), choosing which recorded model plays the small tier and which
the large, and pricing each prompt's call on either with list prices and
cl100k_base token counts. The arithmetic on the result lives in `routing.metrics`; this module must not import
the store, the tasks or the worker.

Which model is which tier comes from the data, never from our model names: the
two models recorded for every prompt (train and test), the less accurate (lower
mean quality, scores mapped to [0, 1] by each file's range) on the train files being
small. A caller may name them instead (`--small`, `--large`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tierflow.providers.pricing import Price
from tierflow.providers.tokens import count_tokens
from tierflow.routing.errors import InputError
from tierflow.routing.metrics import PromptOutcomes

# USD per million input / output tokens, the public list prices of ../shared/data/README.md.
LIST_PRICES: dict[str, Price] = {
    "mistralai/Mixtral-8x7B-Instruct-v0.1": Price(0.60, 0.60),
    "gpt-4-1106-preview": Price(10.00, 30.00),
}
UNRECORDED_OUTPUT_TOKENS = 1  # no response recorded (MMLU): the answer letter


@dataclass(frozen=True)
class ScoreRange:
    """The scale of a graded file's scores, e.g. a judge's 1 to 10."""

    low: float
    high: float

    def normalised(self, score: float) -> float:
        """The score mapped to [0, 1]."""
        return (score - self.low) / (self.high - self.low)


@dataclass(frozen=True)
class ModelOutcome:
    """One model's recorded outcome: `correct` (right or wrong) or a graded `score`, never both."""

    correct: bool | None
    response: str | None
    score: float | None = None

    @property
    def quality(self) -> float:
        """1 or 0 for correctness, else the score in the file's units."""
        if self.score is not None:
            return self.score
        return 1.0 if self.correct else 0.0


@dataclass(frozen=True)
class RecordedPrompt:
    prompt: str
    source: str | None
    outcomes: dict[str, ModelOutcome]
    line: int = 0  # where it was read, for errors about it
    turns: tuple[str, ...] = ()  # several user turns; `prompt` is the first
    score_range: ScoreRange | None = None  # None: the file records correctness

    @property
    def text(self) -> str:
        """What the router reads and the call sends: every user turn, or the prompt."""
        return "\n\n".join(self.turns) if self.turns else self.prompt

    @property
    def graded(self) -> bool:
        return self.score_range is not None

    def normalised_quality(self, model: str) -> float:
        """The model's quality in [0, 1]: correctness as 0 or 1, a score by the file's range."""
        outcome = self.outcomes[model]
        if self.score_range is None or outcome.score is None:
            return outcome.quality
        return self.score_range.normalised(outcome.score)


@dataclass(frozen=True)
class TierModels:
    small: str
    large: str


def _score(value: object, where: tuple[str, int], model: str) -> float:
    source, number = where
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(source, number, f"outcomes.{model}.score", "must be a number")
    if not math.isfinite(value):
        raise InputError(source, number, f"outcomes.{model}.score", f"must be a finite number, not {value}")
    return float(value)


def _outcome(value: object, where: tuple[str, int], model: str) -> ModelOutcome:
    source, number = where
    if not isinstance(value, dict):
        raise InputError(source, number, f"outcomes.{model}", "must be an object with correct or score")
    if "correct" in value and "score" in value:
        raise InputError(source, number, f"outcomes.{model}", "has both correct and score; give one")
    response = value.get("response")
    if response is not None and not isinstance(response, str):
        raise InputError(source, number, f"outcomes.{model}.response", "must be a string")
    if "score" in value:
        return ModelOutcome(None, response, _score(value["score"], where, model))
    if not isinstance(value.get("correct"), bool):
        raise InputError(source, number, f"outcomes.{model}.correct", "must be true or false")
    return ModelOutcome(value["correct"], response)


def _turns(record: dict[str, Any], source: str, number: int) -> tuple[str, ...]:
    turns = record.get("turns")
    if turns is None:
        return ()
    if not isinstance(turns, list) or not turns:
        raise InputError(source, number, "turns", "must be a non-empty list of strings")
    for index, turn in enumerate(turns):
        if not isinstance(turn, str):
            raise InputError(source, number, f"turns.{index}", "must be a string")
    return tuple(turns)


def parse_record(line: str, source: str, number: int) -> RecordedPrompt:
    """One line; InputError names the file, the line and the field that is wrong."""
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(source, number, "line", f"not JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise InputError(source, number, "line", "must be a JSON object")
    if not isinstance(record.get("prompt"), str):
        raise InputError(source, number, "prompt", "must be a string")
    if record.get("source") is not None and not isinstance(record["source"], str):
        raise InputError(source, number, "source", "must be a string")
    outcomes = record.get("outcomes")
    if not isinstance(outcomes, dict) or not outcomes:
        raise InputError(source, number, "outcomes", "must be an object of model -> {correct} or {score}")
    where = (source, number)
    parsed = {str(model): _outcome(value, where, str(model)) for model, value in outcomes.items()}
    turns = _turns(record, source, number)
    return RecordedPrompt(record["prompt"], record.get("source"), parsed, number, turns)


def parse_score_range(option: str | None) -> ScoreRange | None:
    """`--score-range LO,HI`; None when not given."""
    if option is None:
        return None
    try:
        low, high = (float(part) for part in option.split(","))
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError("--score-range", 0, option, "must be LO,HI with LO < HI")
    return ScoreRange(low, high)


def _check_same_shape(records: list[RecordedPrompt], source: str) -> None:
    """One file records the same models throughout, all with `correct` or all with `score`."""
    first = records[0]
    graded = next(iter(first.outcomes.values())).score is not None
    models = {model: record.line for record in reversed(records) for model in record.outcomes}
    for record in records:
        for model, outcome in record.outcomes.items():
            if (outcome.score is not None) != graded:
                field = "score" if outcome.score is not None else "correct"
                kind = "score" if graded else "correct"
                reason = f"this file records {kind} (line {first.line}); a file uses one throughout"
                raise InputError(source, record.line, f"outcomes.{model}.{field}", reason)
        for model, line in models.items():
            if model not in record.outcomes:
                reason = f"missing: {model} is recorded for other prompts of this file (line {line})"
                raise InputError(source, record.line, f"outcomes.{model}", reason)


def _score_range(records: list[RecordedPrompt], source: str, given: ScoreRange | None) -> ScoreRange:
    """The graded file's range: `given` (every score must lie in it) or the scores' own."""
    scored = [(r, m, o.score) for r in records for m, o in r.outcomes.items() if o.score is not None]
    if given is not None:
        for record, model, score in scored:
            if not given.low <= score <= given.high:
                reason = f"{score:g} is outside --score-range {given.low:g},{given.high:g}"
                raise InputError(source, record.line, f"outcomes.{model}.score", reason)
        return given
    low, high = min(s for _, _, s in scored), max(s for _, _, s in scored)
    if low == high:
        raise InputError(source, 0, "outcomes", f"every score is {low:g}; give the scale with --score-range")
    return ScoreRange(low, high)


def read_recorded(path: Path, score_range: ScoreRange | None = None) -> list[RecordedPrompt]:
    """Every record of a JSONL file; an unreadable or empty file, or one mixing `correct` and
    `score` or recording different models for different prompts, is an InputError too.

    A graded file's records carry its range: `score_range` (scores outside it are refused)
    or the lowest and highest score recorded.
    """
    source = str(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # JSON Lines end at \n alone
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, 0, "file", f"cannot be read: {exc}") from None
    records = [parse_record(line, source, n) for n, line in enumerate(lines, start=1) if line.strip()]
    if not records:
        raise InputError(source, 0, "file", "has no records")
    _check_same_shape(records, source)
    if all(outcome.score is None for outcome in records[0].outcomes.values()):
        return records
    scale = _score_range(records, source, score_range)
    return [dataclasses.replace(record, score_range=scale) for record in records]


def common_models(records: Iterable[RecordedPrompt]) -> set[str]:
    """The models recorded for every one of `records`."""
    common: set[str] | None = None
    for record in records:
        common = set(record.outcomes) if common is None else common & set(record.outcomes)
    return common or set()


def choose_tiers(
    train: list[RecordedPrompt],
    test: list[RecordedPrompt],
    small: str | None = None,
    large: str | None = None,
) -> TierModels:
    """Small and large tier models: named by the caller, or the two models of every record, the
    less accurate on `train` being small."""
    models = common_models([*train, *test])
    if small is not None or large is not None:
        named = [name for name in (small, large) if name is not None]
        missing = [name for name in named if name not in models]
        if missing or small is None or large is None or small == large:
            reason = f"--small and --large must name two models recorded for every prompt: {sorted(models)}"
            raise InputError("--small/--large", 0, "model", reason)
        return TierModels(small, large)
    if len(models) != 2:
        reason = f"need exactly two models recorded for every prompt, found {sorted(models)}"
        raise InputError("--train/--test", 0, "outcomes", reason + "; name them with --small and --large")
    accuracy = {model: float(np.mean([r.normalised_quality(model) for r in train])) for model in models}
    weak, strong = sorted(models, key=lambda model: (accuracy[model], model))
    if accuracy[weak] == accuracy[strong]:
        reason = (
            f"{weak} and {strong} are equally accurate on the train files; name them with --small/--large"
        )
        raise InputError("--train", 0, "outcomes", reason)
    return TierModels(weak, strong)


def parse_prices(options: list[str]) -> dict[str, Price]:
    """The list prices with `MODEL=IN,OUT` options (USD per million tokens) added or overriding."""
    prices = dict(LIST_PRICES)
    for option in options:
        model, _, pair = option.rpartition("=")
        try:
            rates = [float(part) for part in pair.split(",")]
        except ValueError:
            rates = []
        if not model or len(rates) != 2 or min(rates) < 0:
            raise InputError("--price", 0, option, "must be MODEL=IN,OUT in USD per million tokens")
        prices[model] = Price(rates[0], rates[1])
    return prices


def call_cost(record: RecordedPrompt, model: str, price: Price, prompt_tokens: int) -> float:
    """The cost of the model's call: the prompt in, its recorded response (or one token) out."""
    response = record.outcomes[model].response
    output_tokens = count_tokens(response) if response is not None else UNRECORDED_OUTPUT_TOKENS
    return price.cost(prompt_tokens, output_tokens)


def prompt_outcomes(
    records: list[RecordedPrompt], tiers: TierModels, prices: dict[str, Price]
) -> PromptOutcomes:
    """Quality (correctness, or the score in the file's units) and cost per prompt on either tier."""
    for model in (tiers.small, tiers.large):
        if model not in prices:
            raise InputError("--price", 0, model, f"no list price; pass --price '{model}=IN,OUT'")
    small_cost, large_cost = [], []
    for record in records:
        prompt_tokens = count_tokens(record.text)
        small_cost.append(call_cost(record, tiers.small, prices[tiers.small], prompt_tokens))
        large_cost.append(call_cost(record, tiers.large, prices[tiers.large], prompt_tokens))
    scale = records[0].score_range if records else None
    return PromptOutcomes(
        small_quality=np.array([r.outcomes[tiers.small].quality for r in records], dtype=np.float64),
        large_quality=np.array([r.outcomes[tiers.large].quality for r in records], dtype=np.float64),
        small_cost=np.array(small_cost, dtype=np.float64),
        large_cost=np.array(large_cost, dtype=np.float64),
        floor=0.0 if scale is None else scale.low,
        graded=scale is not None,
    )


def require_responses(records: list[RecordedPrompt], path: Path, model: str, needed_by: str) -> list[str]:
    """The model's recorded response to every record; InputError names the first record without one."""
    responses = []
    for record in records:
        response = record.outcomes[model].response
        if response is None:
            reason = f"{needed_by} needs the small tier's recorded response"
            raise InputError(str(path), record.line, f"outcomes.{model}.response", reason)
        responses.append(response)
    return responses


def benchmark_name(records: list[RecordedPrompt]) -> str | None:
    """The `source` most records carry, if any."""
    sources = Counter(record.source for record in records if record.source)
    return sources.most_common(1)[0][0] if sources else None
