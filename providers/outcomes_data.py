"""Recorded model outcomes (files shaped like ../shared/data/routellm) read into plain data.

Owns reading `{"id", "source", "category", "prompt", "reference"?, "outcomes":
{model: {"correct": bool, "response"?: str}}}` JSON Lines, choosing which
recorded model plays the small tier and which the large, and pricing each
prompt's call on either with list prices and cl100k_base token counts. The
arithmetic on the result lives in `routing.metrics`; this module must not import
the store, the tasks or the worker.

Which model is which tier comes from the data, never from our model names: the
two models recorded for every prompt (train and test), the less accurate on the
train files being small. A caller may name them instead (`--small`, `--large`).
"""

from __future__ import annotations

import json
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
class ModelOutcome:
    correct: bool
    response: str | None


@dataclass(frozen=True)
class RecordedPrompt:
    prompt: str
    source: str | None
    outcomes: dict[str, ModelOutcome]
    line: int = 0  # where it was read, for errors about it


@dataclass(frozen=True)
class TierModels:
    small: str
    large: str


def _outcome(value: object, source: str, number: int, model: str) -> ModelOutcome:
    if not isinstance(value, dict) or not isinstance(value.get("correct"), bool):
        raise InputError(source, number, f"outcomes.{model}.correct", "must be true or false")
    response = value.get("response")
    if response is not None and not isinstance(response, str):
        raise InputError(source, number, f"outcomes.{model}.response", "must be a string")
    return ModelOutcome(value["correct"], response)


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
        raise InputError(source, number, "outcomes", "must be an object of model -> {correct}")
    parsed = {str(model): _outcome(value, source, number, str(model)) for model, value in outcomes.items()}
    return RecordedPrompt(record["prompt"], record.get("source"), parsed, number)


def read_recorded(path: Path) -> list[RecordedPrompt]:
    """Every record of a JSONL file; an unreadable or empty file is an InputError too."""
    source = str(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # JSON Lines end at \n alone
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, 0, "file", f"cannot be read: {exc}") from None
    records = [parse_record(line, source, n) for n, line in enumerate(lines, start=1) if line.strip()]
    if not records:
        raise InputError(source, 0, "file", "has no records")
    return records


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
    accuracy = {model: float(np.mean([r.outcomes[model].correct for r in train])) for model in models}
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
    """Correctness and cost per prompt on the small and the large tier."""
    for model in (tiers.small, tiers.large):
        if model not in prices:
            raise InputError("--price", 0, model, f"no list price; pass --price '{model}=IN,OUT'")
    small_cost, large_cost = [], []
    for record in records:
        prompt_tokens = count_tokens(record.prompt)
        small_cost.append(call_cost(record, tiers.small, prices[tiers.small], prompt_tokens))
        large_cost.append(call_cost(record, tiers.large, prices[tiers.large], prompt_tokens))
    return PromptOutcomes(
        small_correct=np.array([r.outcomes[tiers.small].correct for r in records], dtype=np.bool_),
        large_correct=np.array([r.outcomes[tiers.large].correct for r in records], dtype=np.bool_),
        small_cost=np.array(small_cost, dtype=np.float64),
        large_cost=np.array(large_cost, dtype=np.float64),
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
