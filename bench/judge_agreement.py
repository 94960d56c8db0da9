"""How well the sampled judge's grades agree with recorded correctness, on a routellm-shaped file.

    .venv/bin/python bench/judge_agreement.py [--data ../shared/data/routellm/gsm8k.jsonl]
                                              [--limit N] [--pass-score 6] [--json]

For each prompt with recorded responses of both models, the judge grades one model's
recorded response (`routing.judging.judge_prompt`, the prompt the workers' judge sends)
through the openai SDK against the local provider server, with structured output
validated and retried once as in the workers (`providers.structured`). A grade at or
above `--pass-score` (of 10) counts as "correct"; the figures compare that with the
file's recorded `correct` of the graded response: agreement, Cohen's kappa, and the
judge's precision and recall on the recorded-correct answers.

OFFLINE: there is no model behind the judge. The local provider server answers a
judge prompt with `providers.judge_rules.offline_grade`: a reference match of the
graded answer's final number against the judge model's own recorded response to the
same prompt (its replay). So "judge = the large model" here means "agrees with what
the large model answered", and "judge = the small model" the same for the small one;
the figures measure those offline judges, not what a live model would grade. A third
row grades with `local-large`, which has no recording: the offline judge without a
reference (it recomputes "a op b" arithmetic, else scores by how hard the text looks).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.providers.base import CompletionRequest
from tierflow.providers.openai import OpenAIProvider
from tierflow.providers.pricing import price_table
from tierflow.providers.server import ProviderServer
from tierflow.providers.structured import complete_structured
from tierflow.routing.errors import ProviderError
from tierflow.routing.experts import parse_answer
from tierflow.routing.jsonl import strict_records
from tierflow.routing.judging import JudgeGrade, judge_prompt

ROOT = Path(__file__).resolve().parent.parent
# ../shared/data beside the checkout, or this machine's shared folder (a worktree has none beside it)
DATA_DIRS = (ROOT.parent / "shared" / "data", Path("/work/shared/data"))
DEFAULT_DATA = next(
    (d / "routellm" / "gsm8k.jsonl" for d in DATA_DIRS if (d / "routellm").is_dir()), DATA_DIRS[0]
)


# A model the server serves from its rules alone: the offline judge without any reference.
RULES_JUDGE = "local-large"


@dataclass(frozen=True)
class Case:
    prompt: str
    response: str
    correct: bool


def read_cases(path: Path, graded: str) -> list[Case]:
    """The prompts whose `graded` model has a recorded response and correctness."""
    cases = []
    with path.open("rb") as stream:
        for item in strict_records(stream, str(path)):
            outcome = item.value.get("outcomes", {}).get(graded, {})
            if isinstance(outcome.get("response"), str) and isinstance(outcome.get("correct"), bool):
                cases.append(Case(item.value["prompt"], outcome["response"], outcome["correct"]))
    return cases


def recorded_models(path: Path) -> tuple[str, str]:
    """(small, large) of the file: the first record's models, the less often correct first."""
    with path.open("rb") as stream:
        records = [item.value for item in strict_records(stream, str(path))]
    models = list(records[0]["outcomes"])
    rate = {m: sum(bool(r["outcomes"].get(m, {}).get("correct")) for r in records) for m in models}
    ordered = sorted(models, key=lambda m: rate[m])
    return ordered[0], ordered[-1]


def grade_all(provider: OpenAIProvider, judge: str, cases: list[Case]) -> list[JudgeGrade | None]:
    grades: list[JudgeGrade | None] = []
    for case in cases:
        prompt = judge_prompt(case.prompt, case.response)
        request = CompletionRequest(
            system=prompt.system,
            user=prompt.user,
            max_tokens=prompt.max_tokens,
            json_schema=prompt.json_schema(),
        )
        try:
            _, answer = complete_structured(
                lambda r: provider.complete(judge, r), request, lambda t: parse_answer(JudgeGrade, t)
            )
        except ProviderError:
            grades.append(None)  # a failed grade: counted apart, never as a grade
            continue
        grades.append(JudgeGrade.model_validate({**answer.output, "confidence": answer.confidence}))
    return grades


def agreement(cases: list[Case], grades: list[JudgeGrade | None], pass_score: int) -> dict[str, Any]:
    pairs = [(c.correct, g.score >= pass_score) for c, g in zip(cases, grades, strict=True) if g is not None]
    n = len(pairs)
    tp = sum(1 for truth, said in pairs if truth and said)
    tn = sum(1 for truth, said in pairs if not truth and not said)
    fp = sum(1 for truth, said in pairs if not truth and said)
    fn = n - tp - tn - fp
    observed = (tp + tn) / n if n else 0.0
    p_yes = ((tp + fp) / n) * ((tp + fn) / n) if n else 0.0
    p_no = ((tn + fn) / n) * ((tn + fp) / n) if n else 0.0
    expected = p_yes + p_no
    return {
        "graded": n,
        "failed": len(grades) - n,
        "recorded_correct": round((tp + fn) / n, 4) if n else None,
        "judged_correct": round((tp + fp) / n, 4) if n else None,
        "agreement": round(observed, 4),
        "kappa": round((observed - expected) / (1 - expected), 4) if expected < 1 else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--pass-score", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    small, large = recorded_models(args.data)
    rows = []
    with ProviderServer(port=0, replay_paths=[args.data], models=(RULES_JUDGE,)) as server:
        prices = price_table({f"openai:{RULES_JUDGE}": (0.0, 0.0)})
        provider = OpenAIProvider(api_key="local", prices=prices, base_url=server.openai_base_url)
        for judge, graded in ((large, small), (small, large), (RULES_JUDGE, small)):
            cases = read_cases(args.data, graded)[: args.limit]
            started = time.perf_counter()
            grades = grade_all(provider, judge, cases)
            figures = agreement(cases, grades, args.pass_score)
            figures.update(judge=judge, graded_model=graded, seconds=round(time.perf_counter() - started, 2))
            rows.append({"offline": True, **figures})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"OFFLINE judge (providers/judge_rules.py; no model grades anything), {args.data.name}")
    for row in rows:
        print(
            f"  judge {row['judge']} grading {row['graded_model']}: {row['graded']} graded, "
            f"{row['failed']} failed; recorded correct {row['recorded_correct']:.1%}, judged correct "
            f"{row['judged_correct']:.1%}; agreement {row['agreement']:.1%}, kappa {row['kappa']}, "
            f"precision {row['precision']}, recall {row['recall']}; {row['seconds']} s"
        )


if __name__ == "__main__":
    main()
