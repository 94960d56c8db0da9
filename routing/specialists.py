"""Which of a kind's specialists takes a job, and whether a kind's specialists are well declared.

A kind may declare specialists (routing/kinds/spec.py `SpecialistSpec`): named expert sets,
each selected by intents. The staged analysis (rules, then the semantic stage, then the LLM
stage) names the job's intent; `choose_specialist` maps it to the specialist whose intents
hold it. The general specialist takes the rest, never nowhere:
- an intent no specialist declares;
- a job the semantic stage found out of scope (`Analysis.out_of_scope`: its nearest route
  scored below that route's fitted threshold and no later stage named an intent).
The choice names the stage that decided it: the analysis stage that named the intent, or
"semantic" for an out-of-scope job.

`lowest_start` and `raised_to` apply a min_tier (a specialist's, or the kind's own) to the
tier a first attempt starts on.

`specialist_problems` checks a kind's specialists against the kind: the intents they name
(where the kind declares its intents), the experts, instructions and checks they name.
Both the kinds files (routing/kinds/files.py) and the registry (Python plug-ins) use it.

Pure: routing/ only.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from tierflow.routing.analysis import Analysis
from tierflow.routing.kinds.spec import ExpertType, ExpertWhen, KindSpec, SpecialistSpec
from tierflow.routing.policy import Policy
from tierflow.routing.states import TIER_LADDER, Tier

# A key of a kind's declaration, in KindSpec's field names: ("specialists", 1, "experts").
Key = tuple[str | int, ...]


@dataclass(frozen=True)
class SpecialistChoice:
    specialist: str
    intent: str
    stage: str  # the analysis stage that decided: rules, semantic or llm
    reason: str


def choose_specialist(kind: KindSpec, analysis: Analysis) -> SpecialistChoice | None:
    """The specialist that takes a job of `kind` with this analysis; None when the kind declares
    no specialists (or, undeclared through the registry, no general one for a job none selects)."""
    general = kind.general_specialist()
    intent = analysis.intent
    if general is not None and analysis.out_of_scope:
        why = f"out of scope of every semantic route: the general specialist {general.name}"
        return SpecialistChoice(general.name, intent, "semantic", why)
    for specialist in kind.specialists:
        if intent in specialist.intents:
            why = f"intent {intent} ({analysis.stage}) selects the specialist {specialist.name}"
            return SpecialistChoice(specialist.name, intent, analysis.stage, why)
    if general is None:
        return None
    why = f"no specialist for intent {intent}: the general specialist {general.name}"
    return SpecialistChoice(general.name, intent, analysis.stage, why)


def specialist_view(kind: KindSpec, analysis: Analysis) -> tuple[KindSpec, SpecialistChoice | None]:
    """The kind as the chosen specialist runs it (routing/kinds/spec.py `as_specialist`), and the
    choice; the kind itself and None when it declares no specialists."""
    choice = choose_specialist(kind, analysis)
    return kind.as_specialist(choice.specialist if choice is not None else None), choice


def lowest_start(kind: KindSpec, policy: Policy) -> Tier | None:
    """The cheapest tier on the policy's ladder a first attempt of the kind may start on, by its
    `min_tier` (a specialist's, or the kind's own); None when it sets none."""
    low = kind.routing.min_tier
    if low is None:
        return None
    order = TIER_LADDER.index
    return next((tier for tier in policy.ladder if order(tier) >= order(low)), policy.ladder[-1])


def raised_to(tier: Tier, lowest: Tier | None) -> Tier:
    """`tier`, or `lowest` when that is the dearer of the two."""
    order = TIER_LADDER.index
    return lowest if lowest is not None and order(tier) < order(lowest) else tier


def raised_choices(choices: dict[Tier, float], lowest: Tier | None) -> dict[Tier, float]:
    """First-tier probabilities with the tiers below `lowest` moved up to it."""
    raised: dict[Tier, float] = {}
    for tier, share in choices.items():
        raised[raised_to(tier, lowest)] = raised.get(raised_to(tier, lowest), 0.0) + share
    return raised


def specialist_problems(kind: KindSpec, checks: Collection[str]) -> list[tuple[Key, str]]:
    """(key, reason) for each way the kind's specialists do not fit the kind; `checks` are the
    check types the registry offers."""
    if not kind.specialists:
        return []
    problems: list[tuple[Key, str]] = []
    generals = [i for i, s in enumerate(kind.specialists) if s.general]
    if not generals:
        why = "a kind with specialists needs a general one (general = true) for the jobs no intent selects"
        problems.append((("specialists", 0), why))
    for i in generals[1:]:
        first = kind.specialists[generals[0]].name
        why = f"a second general specialist (the first is {first})"
        problems.append((("specialists", i, "general"), why))
    selected: dict[str, str] = {}
    for i, specialist in enumerate(kind.specialists):
        base: Key = ("specialists", i)
        problems += _intent_problems(kind, specialist, base, selected)
        problems += _expert_problems(kind, specialist, base)
        problems += _check_problems(kind, specialist, base, checks)
    return problems


def _intent_problems(
    kind: KindSpec, specialist: SpecialistSpec, base: Key, selected: dict[str, str]
) -> list[tuple[Key, str]]:
    key: Key = (*base, "intents")
    problems: list[tuple[Key, str]] = []
    if not specialist.intents and not specialist.general:
        problems.append((key, "selects no intent: no job would reach it"))
    for intent in specialist.intents:
        if kind.intents and intent not in kind.intents:
            known = ", ".join(kind.intents)
            problems.append((key, f"names intent {intent!r}, not an intent of this kind (known: {known})"))
        elif intent in selected:
            problems.append((key, f"intent {intent!r} already selects the specialist {selected[intent]}"))
        else:
            selected[intent] = specialist.name
    return problems


def _runs(kind: KindSpec, specialist: SpecialistSpec) -> set[str]:
    """The experts a specialist may run: the ones it names, else every expert of the kind."""
    return set(specialist.experts) if specialist.experts else {e.name for e in kind.experts}


def _expert_problems(kind: KindSpec, specialist: SpecialistSpec, base: Key) -> list[tuple[Key, str]]:
    problems: list[tuple[Key, str]] = []
    for name in specialist.experts:
        if kind.expert(name) is None:
            problems.append(((*base, "experts"), f"names {name!r}, not an expert of this kind"))
    named = [e for e in (kind.expert(name) for name in specialist.experts) if e is not None]
    if named and not any(e.when is ExpertWhen.ALWAYS for e in named):
        problems.append(((*base, "experts"), "names no expert that always runs"))
    runs = _runs(kind, specialist)
    for name in specialist.instructions:
        expert = kind.expert(name)
        if expert is None or expert.type is not ExpertType.MODEL:
            why = f"{name!r} is not a model expert of this kind: an instruction goes into a model's prompt"
        elif name not in runs:
            why = f"{name!r} is not one of the specialist's experts"
        else:
            continue
        problems.append(((*base, "instructions", name), why))
    return problems


def _check_problems(
    kind: KindSpec, specialist: SpecialistSpec, base: Key, checks: Collection[str]
) -> list[tuple[Key, str]]:
    problems: list[tuple[Key, str]] = []
    runs = _runs(kind, specialist)
    for j, check in enumerate(specialist.checks):
        if check.type not in checks:
            known = ", ".join(sorted(checks))
            problems.append(((*base, "checks", j, "type"), f"unknown check {check.type!r} (known: {known})"))
        for name in check.experts:
            if name not in runs:
                why = f"names {name!r}, not an expert this specialist runs"
                problems.append(((*base, "checks", j, "experts"), why))
    return problems
