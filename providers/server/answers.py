"""Where the local provider server's answers come from: replay files, then rules.

Owns the replay book (recorded responses by exact prompt text and model, from
JSONL files shaped like ../shared/data/routellm), the set of models the server
knows, and each model's strength for the deterministic rules. Knows nothing of
HTTP or of either wire protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tierflow.providers import rules
from tierflow.providers.judge_rules import offline_grade
from tierflow.routing.errors import InputError
from tierflow.routing.jsonl import strict_records
from tierflow.routing.judging import JUDGE_TASK, read_judge_request
from tierflow.routing.kinds.registry import builtin_registry

WEAK_MARKERS = ("mini", "haiku", "small", "nano", "lite", "flash", "7b", "8b")
MEDIUM_MARKERS = ("medium", "sonnet")
WEAK_STRENGTH = 0.55
MEDIUM_STRENGTH = 0.8
STRONG_STRENGTH = 0.97

DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "claude-haiku-4-5",
    "claude-sonnet-4-6",
    "claude-opus-4-6",
    "local-small",
    "local-medium",
    "local-large",
)


# What tierflow's expert prompts say when they want a JSON object (routing/experts.py `_system`).
_ASKED_KEYS = re.compile(r"Answer with one JSON object with the keys ([^;\n]+)")
_KEY = re.compile(r'"(\w+)"')


class AnswerSource(StrEnum):
    REPLAY = "replay"
    RULES = "rules"


@dataclass(frozen=True)
class Answer:
    text: str
    source: AnswerSource


def default_strength(model: str) -> float:
    """Strength by name: "mini", "haiku", "small" and the like are weak, "sonnet" medium, others strong."""
    name = model.lower()
    if any(marker in name for marker in WEAK_MARKERS):
        return WEAK_STRENGTH
    if any(marker in name for marker in MEDIUM_MARKERS):
        return MEDIUM_STRENGTH
    return STRONG_STRENGTH


class ReplayBook:
    """Recorded responses: prompt text -> recorded model name -> response text.

    Records without a `response` (MMLU keeps correctness only) are skipped; when two
    records share a prompt, the first one read wins.
    """

    def __init__(self, responses: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._responses: dict[str, dict[str, str]] = {p: dict(r) for p, r in (responses or {}).items()}

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> ReplayBook:
        book = cls()
        for path in paths:
            book._read(Path(path))
        return book

    def _read(self, path: Path) -> None:
        with path.open("rb") as stream:
            for item in strict_records(stream, str(path)):
                record, number = item.value, item.line
                prompt = record.get("prompt") if isinstance(record, dict) else None
                outcomes = record.get("outcomes") if isinstance(record, dict) else None
                if not isinstance(prompt, str) or not isinstance(outcomes, dict):
                    raise InputError(str(path), number, "record", "prompt must be text, outcomes an object")
                recorded = self._responses.setdefault(prompt, {})
                for model, outcome in outcomes.items():
                    response = outcome.get("response") if isinstance(outcome, dict) else None
                    if isinstance(response, str):
                        recorded.setdefault(model, response)

    def models(self) -> set[str]:
        return {model for recorded in self._responses.values() for model in recorded}

    def __len__(self) -> int:
        return len(self._responses)

    def lookup(self, prompt: str, model: str) -> str | None:
        return self._responses.get(prompt, {}).get(model)


class Answerer:
    """Answers a model's call from the replay book, else from the rules, else not at all.

    Args:
        replay: the recorded responses.
        models: model names served from the rules; the replay book's recorded models and
            the aliases in `replay_models` are served too.
        replay_models: served model name -> recorded model name, e.g. "gpt-4o" ->
            "gpt-4-1106-preview".
        strengths: rule strength per served model; others get `default_strength`.
        envelope: put a recorded plain-text response in the JSON object the expert asks for
            (`in_envelope`); False serves it exactly as recorded.
    """

    def __init__(
        self,
        replay: ReplayBook,
        models: Iterable[str] = DEFAULT_MODELS,
        replay_models: Mapping[str, str] | None = None,
        strengths: Mapping[str, float] | None = None,
        envelope: bool = True,
    ) -> None:
        self._replay = replay
        self._envelope = envelope
        self._aliases = dict(replay_models or {})
        self._strengths = dict(strengths or {})
        self._models = frozenset(models) | replay.models() | self._aliases.keys() | self._strengths.keys()

    def models(self) -> list[str]:
        return sorted(self._models)

    def knows(self, model: str) -> bool:
        return model in self._models

    def strength(self, model: str) -> float:
        return self._strengths.get(model, default_strength(model))

    def answer(self, model: str, system: str, user: str) -> Answer | None:
        """The text `model` gives to this prompt, or None for a model the server does not serve."""
        if not self.knows(model):
            return None
        if rules.task_of(system) == JUDGE_TASK:
            return self._judge(model, user)
        recorded = self._replay.lookup(user, self._aliases.get(model, model))
        if recorded is not None:
            if self._envelope:
                recorded = in_envelope(recorded, system, user, self.strength(model))
            return Answer(recorded, AnswerSource.REPLAY)
        return Answer(rules.answer(system, user, self.strength(model)), AnswerSource.RULES)

    def _judge(self, model: str, user: str) -> Answer:
        """The offline judge (providers/judge_rules.py), against this model's recorded response
        to the job when the replay book has one (then the answer's source is the replay)."""
        request = read_judge_request(user)
        reference = self._replay.lookup(request[0], self._aliases.get(model, model)) if request else None
        source = AnswerSource.REPLAY if reference is not None else AnswerSource.RULES
        return Answer(offline_grade(user, rules.hardness, reference), source)


def in_envelope(recorded: str, system: str, user: str, strength: float) -> str:
    """A recorded plain-text response, as the JSON object the system prompt asks for.

    Recorded responses (../shared/data/routellm) are plain text, while tierflow's experts
    ask for one JSON object with a text key (a built-in kind's answer field) and `confidence`. The
    text goes under that key word for word, and the confidence is the rules' for this
    model's strength and prompt, since nothing recorded one. A response that already is
    a JSON object, or a prompt that asks for no such object, gets the text unchanged.
    """
    keys = _ASKED_KEYS.search(system)
    if keys is None:
        return recorded
    asked = _KEY.findall(keys.group(1))
    text_keys = [key for key in asked if key in builtin_registry().answer_fields()]
    if len(text_keys) != 1 or set(asked) - {*text_keys, "confidence"} or _is_object(recorded):
        return recorded
    return json.dumps({text_keys[0]: recorded, "confidence": rules.confidence(strength, user)})


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
