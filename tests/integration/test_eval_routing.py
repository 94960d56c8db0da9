"""`tierflow eval routing` on made-up outcome files and on the real RouteLLM GSM8K outcomes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import shared_data
from tierflow.routing.metrics import BaselineRouter, baseline_scores, evaluate_scores
from tierflow.worker.cli_eval_routing import evaluate_routing, register

ROUTELLM = shared_data("routellm")
CONTRACT = {
    "test",
    "n",
    "router",
    "mode",
    "small_accuracy",
    "large_accuracy",
    "apgr",
    "cpt50",
    "cpt80",
    "large_share_at_95pct_quality",
    "cost_ratio_at_95pct_quality",
    "quality_at_95pct",
    "graded",
    "score_range",
    "curve",
}
PRICES = ["--price", "strong-model=10,30", "--price", "weak-model=0.6,0.6"]
# (weak correct, strong correct) per prompt: weak 3/6, strong 5/6
TRUTH = [(True, True), (True, False), (True, True), (False, True), (False, True), (False, True)]


def _record(index: int, weak: bool, strong: bool, source: str = "made-up") -> dict[str, object]:
    outcomes = {  # strong first: the tier must come from the accuracy, not the order or the name
        "strong-model": {"correct": strong, "response": f"answer {index}"},
        "weak-model": {"correct": weak},
    }
    return {
        "id": f"q{index}",
        "source": source,
        "category": "x",
        "prompt": f"question {index}?",
        "outcomes": outcomes,
    }


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _outcomes_file(tmp_path: Path, source: str = "made-up") -> Path:
    records = [_record(i, weak, strong, source) for i, (weak, strong) in enumerate(TRUTH)]
    return _write(tmp_path / "outcomes.jsonl", [json.dumps(r) for r in records])


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing the group
        """Unused."""

    return app


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(_app(), ["routing", *args])
    return result.exit_code, result.output


def test_json_prints_exactly_the_contract(tmp_path: Path) -> None:
    path = _outcomes_file(tmp_path)
    code, output = _invoke("--train", str(path), "--test", str(path), "--router", "oracle", "--json", *PRICES)
    assert code == 0, output
    report = json.loads(output)
    assert set(report) == CONTRACT
    assert (report["test"], report["n"], report["router"], report["mode"]) == (
        str(path),
        6,
        "oracle",
        "offline",
    )
    assert (report["small_accuracy"], report["large_accuracy"]) == (0.5, pytest.approx(5 / 6, abs=1e-6))
    # The oracle sends the three prompts only large gets right, then the two it ties, then
    # the one only small gets right (tests/unit/test_metrics.py computes the area by hand).
    assert report["apgr"] == pytest.approx(0.375 + 0.5 + 1.25 / 6, abs=1e-6)
    assert [set(point) for point in report["curve"]] == [{"large_share", "accuracy", "cost_usd"}] * 4
    assert [point["large_share"] for point in report["curve"]] == [0.0, 0.5, 0.833333, 1.0]
    assert all(0 <= value <= 1 for value in (report["cpt50"], report["cpt80"]))
    assert (report["graded"], report["score_range"]) == (False, None)
    assert report["quality_at_95pct"] == pytest.approx(0.95 * 5 / 6, abs=1e-6)


def _graded_file(tmp_path: Path) -> Path:
    # (weak, strong) judge scores: weak mean 4, strong 7; gains +6, +3, 0 on a 1 to 10 scale.
    scores = [(2, 8), (4, 7), (6, 6)]
    records = [
        {"prompt": f"q{i}", "outcomes": {"strong-model": {"score": hi}, "weak-model": {"score": lo}}}
        for i, (lo, hi) in enumerate(scores)
    ]
    return _write(tmp_path / "graded.jsonl", [json.dumps(r) for r in records])


def test_a_graded_file_reports_mean_scores_and_the_95pct_quality_in_its_units(tmp_path: Path) -> None:
    path = _graded_file(tmp_path)
    args = ("--test", str(path), "--router", "oracle", "--score-range", "1,10", "--json", *PRICES)
    code, output = _invoke(*args)
    assert code == 0, output
    report = json.loads(output)
    assert (report["graded"], report["score_range"]) == (True, [1.0, 10.0])
    assert (report["small_accuracy"], report["large_accuracy"]) == (4.0, 7.0)
    assert report["quality_at_95pct"] == pytest.approx(1 + 0.95 * 6)
    # PGR over the cuts 0, 1/3, 2/3, 1: 0, 2/3, 1, 1 -> (1/3) x (1/3 + 5/6 + 1) = 13/18.
    assert report["apgr"] == pytest.approx(13 / 18, abs=1e-6)
    code, output = _invoke(*args[: -1 - len(PRICES)], "--score-range", "3,10", *PRICES)
    assert code == 2 and output.startswith(f"error: {path}:1: outcomes.weak-model.score: 2 is outside")


def test_small_and_large_can_be_named(tmp_path: Path) -> None:
    path = _outcomes_file(tmp_path)
    swapped = ["--small", "strong-model", "--large", "weak-model"]
    code, output = _invoke("--train", str(path), "--test", str(path), "--json", *PRICES, *swapped)
    assert code == 0, output
    report = json.loads(output)
    assert (report["small_accuracy"], report["large_accuracy"]) == (pytest.approx(5 / 6, abs=1e-6), 0.5)


def test_costs_come_from_the_list_prices_and_token_counts(tmp_path: Path) -> None:
    run = evaluate_routing(
        [_outcomes_file(tmp_path)],
        _outcomes_file(tmp_path),
        BaselineRouter.ALWAYS_LARGE,
        price_options=PRICES[1::2],
    )
    # cl100k_base: "question 0?" is 4 tokens ("question", " ", "0", "?") and "answer 0" 3;
    # weak has no recorded response, so one output token.
    assert run.outcomes.small_cost[0] == pytest.approx((4 * 0.6 + 1 * 0.6) / 1e6)
    assert run.outcomes.large_cost[0] == pytest.approx((4 * 10 + 3 * 30) / 1e6)


def test_a_model_without_a_price_is_a_one_line_error(tmp_path: Path) -> None:
    path = _outcomes_file(tmp_path)
    code, output = _invoke("--train", str(path), "--test", str(path), "--json")
    assert code == 2
    assert output.strip().count("\n") == 0 and "--price" in output and "model" in output


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("not json", "line"),
        ("[1]", "line"),
        ('{"outcomes": {"a": {"correct": true}}}', "prompt"),
        ('{"prompt": "p"}', "outcomes"),
        ('{"prompt": "p", "outcomes": {"a": {"correct": "yes"}}}', "outcomes.a.correct"),
        ('{"prompt": "p", "outcomes": {"a": {"correct": true, "response": 5}}}', "outcomes.a.response"),
    ],
)
def test_a_bad_line_is_a_one_line_error_naming_file_and_line(tmp_path: Path, line: str, field: str) -> None:
    good = _outcomes_file(tmp_path)
    bad = _write(tmp_path / "bad.jsonl", [json.dumps(_record(0, True, True)), line])
    code, output = _invoke("--train", str(good), "--test", str(bad), *PRICES)
    assert code == 2
    assert output.strip().count("\n") == 0
    assert output.startswith(f"error: {bad}:2: {field}:")


def test_online_mode_refuses_the_baseline_routers(tmp_path: Path) -> None:
    path = _outcomes_file(tmp_path)
    code, output = _invoke("--train", str(path), "--test", str(path), "--mode", "online", *PRICES)
    assert code == 2
    assert (
        output.strip() == "error: --router: router: --mode online runs the learned routers pre and combined"
    )


def test_without_json_a_table_is_printed(tmp_path: Path) -> None:
    path = _outcomes_file(tmp_path)
    code, output = _invoke("--train", str(path), "--test", str(path), "--router", "always-small", *PRICES)
    assert code == 0, output
    assert "APGR" in output and "0.500" in output and "50.00%" in output


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = _outcomes_file(tmp_path, source="gsm8k")
    plot = tmp_path / "curve.png"
    code, output = _invoke("--train", str(path), "--test", str(path), "--plot", str(plot), *PRICES)
    assert code == 0, output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _gsm8k() -> Path:
    path = ROUTELLM / "gsm8k.jsonl" if ROUTELLM else None
    if path is None or not path.is_file():
        message = "routellm data not found (TIERFLOW_TEST_DATA, ../shared/data or /work/shared/data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: missing data fails the run)")
        pytest.skip(message)
    return path


def test_baselines_on_real_gsm8k_outcomes() -> None:
    gsm8k = _gsm8k()
    # train = test only for this sanity check of the tier choice and the README's accuracies
    run = evaluate_routing([gsm8k], gsm8k, BaselineRouter.ORACLE)
    assert run.quality.small_accuracy == pytest.approx(0.638, abs=0.005)
    assert run.quality.large_accuracy == pytest.approx(0.867, abs=0.005)
    assert run.quality.apgr is not None and run.quality.apgr > 0.9
    # One seed's APGR has a standard deviation of about 0.026 on 632 prompts; the mean of
    # 20 seeds, about 0.006, so 0.45-0.55 is a band of 8 standard deviations.
    apgrs = [
        evaluate_scores(run.outcomes, baseline_scores(BaselineRouter.RANDOM, run.outcomes, s)).apgr
        for s in range(20)
    ]
    assert 0.45 <= float(np.mean(np.array(apgrs, dtype=np.float64))) <= 0.55


# --- learned routers, on made-up files whose right tier the prompt or the weak answer gives away
