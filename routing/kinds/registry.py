"""The kinds in force: built once from the settings (built-ins, kinds files, plug-ins) and passed in.

A registry is immutable. It resolves each rule expert's rule and checks that every
check, rule and template it holds is known, so a kind that loads can run. There is
no module-level registry: the runtime builds one and hands it to whoever needs it.

Pure: routing/ only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

import jsonschema

from tierflow.routing.errors import UnknownKind
from tierflow.routing.kinds.builtin import BUILTIN_CHECKS, BUILTIN_KINDS, BUILTIN_RULES, RECORDED_PROMPT_KIND
from tierflow.routing.kinds.checks import CHECKS, Check
from tierflow.routing.kinds.extractors import RULES
from tierflow.routing.kinds.files import key_text
from tierflow.routing.kinds.spec import CheckSpec, ExpertType, KindSpec, OfflineAnswer, Rule
from tierflow.routing.kinds.template import render
from tierflow.routing.specialists import specialist_problems


class KindRegistry:
    """Kinds by name, in the order they were declared, with the rules and checks they may use."""

    def __init__(
        self,
        kinds: Iterable[KindSpec],
        rules: Mapping[str, Rule] | None = None,
        checks: Mapping[str, Check] | None = None,
    ) -> None:
        self._rules: dict[str, Rule] = {**RULES, **BUILTIN_RULES, **(rules or {})}
        self._checks: dict[str, Check] = {**CHECKS, **BUILTIN_CHECKS, **(checks or {})}
        self._kinds: dict[str, KindSpec] = {}
        for kind in kinds:
            if kind.name in self._kinds:
                raise ValueError(f"kind {kind.name!r} is declared twice")
            self._kinds[kind.name] = self._resolved(kind)

    def _resolved(self, kind: KindSpec) -> KindSpec:
        problems = spec_problems(kind, self._rules, self._checks)
        if problems:
            raise ValueError(f"kind {kind.name!r}: " + "; ".join(f"{key}: {why}" for key, why in problems))
        experts = tuple(
            e.model_copy(update={"run": self._rules[e.rule]}) if e.type is ExpertType.RULE and e.rule else e
            for e in kind.experts
        )
        specialists = tuple(
            s.model_copy(update={"checks": self._with_runs(s.checks)}) for s in kind.specialists
        )
        update = {"experts": experts, "checks": self._with_runs(kind.checks), "specialists": specialists}
        return kind.model_copy(update=update)

    def _with_runs(self, checks: tuple[CheckSpec, ...]) -> tuple[CheckSpec, ...]:
        return tuple(c.model_copy(update={"run": self._checks[c.type]}) for c in checks)

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[KindSpec]:
        return iter(self._kinds.values())

    def __len__(self) -> int:
        return len(self._kinds)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def get(self, name: str) -> KindSpec:
        """The kind named; UnknownKind when none is declared."""
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownKind(name) from None

    def check(self, name: str) -> Check:
        return self._checks[name]

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._rules))

    @property
    def check_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._checks))

    def with_kinds(self, kinds: Iterable[KindSpec]) -> KindRegistry:
        """A new registry: these kinds after this one's, with the same rules and checks."""
        return KindRegistry([*self, *kinds], self._rules, self._checks)

    def payload_problems(self, name: str, payload: dict[str, Any]) -> list[tuple[str, str]]:
        """(field, reason) for each way the payload fails its kind's schema; empty when it is valid."""
        kind = self.get(name)
        if kind.validate_payload is not None:
            return kind.validate_payload(payload)
        validator = jsonschema.Draft202012Validator(kind.payload_schema)
        return [
            (".".join(str(part) for part in error.absolute_path) or "<payload>", error.message)
            for error in sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
        ]

    def text(self, name: str, payload: Mapping[str, object]) -> str:
        return render(self.get(name).text, payload)

    def chat_fields(self) -> dict[str, str]:
        """The kinds a chat message may become, each with the payload field the message fills."""
        return {kind.name: kind.chat_field for kind in self if kind.chat_field is not None}

    def chat_job(self, text: str, kind: str | None = None) -> tuple[str, dict[str, str]]:
        """(kind, payload) of a chat message's job: the kind named, else the recorded-prompt kind.
        ValueError when the kind takes no chat message."""
        name = kind if kind is not None else recorded_prompt_kind().name
        fields = self.chat_fields()
        if name not in fields:
            raise ValueError(f"{name!r} is not a kind a chat message becomes ({', '.join(fields)})")
        return name, {fields[name]: text}

    def answer_fields(self) -> tuple[str, ...]:
        """The output fields that hold an answer's text, one per kind that names one."""
        return tuple(dict.fromkeys(kind.answer_field for kind in self if kind.answer_field))

    def offline_answer(self, task: str) -> OfflineAnswer | None:
        """How an offline model answers the prompt of the task named (a plug-in expert's), or None."""
        for kind in self:
            for expert in kind.experts:
                if expert.offline is not None and expert.task == task:
                    return expert.offline
        return None


def spec_problems(
    kind: KindSpec, rules: Mapping[str, Rule], checks: Mapping[str, Check]
) -> list[tuple[str, str]]:
    """(key, reason) for each part of a kind that names a rule or check the registry lacks."""
    problems = []
    for index, expert in enumerate(kind.experts):
        key = f"experts[{index}]"
        if expert.type is ExpertType.RULE and (expert.rule is None or expert.rule not in rules):
            problems.append(
                (f"{key}.rule", f"unknown rule {expert.rule!r} (known: {', '.join(sorted(rules))})")
            )
        if expert.type is ExpertType.MODEL and expert.build is None and expert.prompt is None:
            problems.append((f"{key}.prompt", "a model expert needs a prompt template"))
        if expert.type is ExpertType.MODEL and expert.build is None and expert.answer_schema is None:
            problems.append((f"{key}.answer_schema", "a model expert needs an answer schema"))
    for index, check in enumerate(kind.checks):
        if check.type not in checks:
            known = ", ".join(sorted(checks))
            problems.append((f"checks[{index}].type", f"unknown check {check.type!r} (known: {known})"))
    problems += [(key_text(key), why) for key, why in specialist_problems(kind, checks)]
    return problems


@cache
def builtin_registry() -> KindRegistry:
    """The three built-in kinds alone (immutable, so one is shared)."""
    return KindRegistry(BUILTIN_KINDS)


def default_offline_answer() -> OfflineAnswer:
    """How an offline model answers a prompt no expert claims: as the recorded-prompt kind's answerer."""
    kind = recorded_prompt_kind()
    offline = kind.expert(kind.default_experts()[0])
    assert offline is not None and offline.offline is not None, "the built-in answerer answers offline"
    return offline.offline


def recorded_prompt_kind() -> KindSpec:
    """The kind recorded chat prompts are routed as in evaluations and replays."""
    return builtin_registry().get(RECORDED_PROMPT_KIND)
