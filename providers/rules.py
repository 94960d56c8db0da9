"""Deterministic answers to tierflow's own prompts, by model strength.

The fake provider and the local provider server answer from these rules, so the demo
and the tests get sensible, repeatable answers without any model. A kind's experts are
answered through the kinds' seam: a declared expert from its answer schema
(routing/kinds/offline.py), a plug-in's expert by the answerer it carries (the built-in
kinds' in routing/kinds/builtin_offline.py). What is left here answers the prompts that
belong to no kind: the analysis stage's and the coach's.
"""

from __future__ import annotations

import json
import re

from tierflow.providers.judge_rules import offline_grade
from tierflow.routing.analysis import INTENTS
from tierflow.routing.decompose import COURTESY, DECOMPOSE_TASK, SENTENCE_END
from tierflow.routing.judging import JUDGE_TASK
from tierflow.routing.kinds.offline import confidence, hardness, schema_answer
from tierflow.routing.kinds.registry import KindRegistry, builtin_registry, default_offline_answer

__all__ = ["answer", "confidence", "hardness", "task_of"]

TASK = re.compile(r"^Task: (\w+)", re.MULTILINE)


def answer(system: str, user: str, strength: float, kinds: KindRegistry | None = None) -> str:
    """The model's text for one of tierflow's prompts: a kind's expert's (of `kinds`, the built-ins
    when None), the analysis stage's or the coach's; any other prompt as the recorded-prompt kind's."""
    declared = schema_answer(system, user, strength, confidence(strength, user))
    if declared is not None:
        return declared
    task = task_of(system)
    if task == JUDGE_TASK:
        return offline_grade(user, hardness, None)
    if task == "analyze":
        return _analyze(user, strength)
    if task == "coach":
        return _coach(user, strength)
    if task == DECOMPOSE_TASK:
        return _decompose(system, user, strength)
    offline = (kinds or builtin_registry()).offline_answer(task) or default_offline_answer()
    return offline(user, strength)


def task_of(system: str) -> str:
    """The task a system message names ("Task: NAME" on a line of its own), else ""."""
    match = TASK.search(system)
    return match.group(1) if match else ""


def _coach(text: str, strength: float) -> str:
    """Where most recent failures were on the small tier, send less to small (weak models overreach)."""
    try:
        body = json.loads(text)
        failures, policy = list(body["failures"]), dict(body["policy"])
    except (ValueError, KeyError, TypeError):
        return json.dumps({"summary": "could not read the request", "changes": [], "confidence": 0.2})
    on_small = sum(1 for failure in failures if failure.get("tier") == "small")
    changes = []
    if failures and on_small * 2 >= len(failures) and policy.get("small_max_difficulty", 0) > 0.1:
        step = 0.05 if strength >= 0.7 else 0.2
        changes.append(
            {
                "field": "small_max_difficulty",
                "value": round(policy["small_max_difficulty"] - step, 3),
                "why": f"{on_small} of {len(failures)} recent failures were on the small tier",
            }
        )
    summary = f"{len(failures)} recent failures, {on_small} on the small tier"
    return json.dumps({"summary": summary, "changes": changes, "confidence": round(0.5 + strength / 2, 3)})


RISKY = re.compile(r"\b(lawyer|attorney|lawsuit|legal action|court|fraud|close my account)\b", re.I)
INTENT_WORDS = (
    ("refund", "refund"),
    ("invoice", "billing"),
    ("charge", "billing"),
    ("password", "account"),
    ("log in", "account"),
    ("parcel", "shipping"),
    ("deliver", "shipping"),
    ("error", "technical"),
)


def _analyze(text: str, strength: float) -> str:
    lowered = text.lower()
    intent = next((name for word, name in INTENT_WORDS if word in lowered), "general")
    risk = min(1.0, 0.5 * len(RISKY.findall(text)))
    reasons = [f"{len(text.split())} words", f"looks like a {intent} request"]
    body = {"intent": intent, "difficulty": round(hardness(text), 3), "risk": risk, "reasons": reasons}
    return json.dumps({**body, "confidence": confidence(strength, text)})


OFFERED_INTENTS = re.compile(r"intent, one of: ([\w, ]+)\.")


def _sentence_intent(sentence: str) -> str:
    """The first topic the sentence names, by the analysis rules' signals."""
    return next((name for name, pattern in INTENTS if pattern.search(sentence)), "general")


def _decompose(system: str, text: str, strength: float) -> str:
    """Sentences grouped into asks: a sentence about another topic than the ask before it starts
    a new ask, one about no topic stays with the ask before. One ask: no subtasks."""
    offered = OFFERED_INTENTS.search(system)
    intents = {name.strip() for name in offered.group(1).split(",")} if offered else set()
    asks: list[tuple[str, list[str]]] = []
    for sentence in SENTENCE_END.split(" ".join(text.split())):
        if not sentence or COURTESY.match(sentence):
            continue
        intent = _sentence_intent(sentence)
        if asks and (intent == "general" or intent == asks[-1][0]):
            asks[-1][1].append(sentence)
        elif asks and asks[-1][0] == "general":
            asks[-1] = (intent, [*asks[-1][1], sentence])  # the opening sentences named no topic
        else:
            asks.append((intent, [sentence]))
    subtasks = [
        {"text": " ".join(sentences), "intent": intent if intent in intents else ""}
        for intent, sentences in asks
    ]
    body = {"subtasks": subtasks if len(subtasks) >= 2 else []}
    return json.dumps({**body, "confidence": confidence(strength, text)})
