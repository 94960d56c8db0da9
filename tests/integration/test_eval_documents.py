"""`tierflow eval documents` on a made-up file and on the real SROIE receipts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import shared_data
from tierflow.routing.errors import InputError
from tierflow.worker.cli_eval_documents import evaluate_documents, register

SROIE = shared_data("sroie")

GOOD = (
    "NASI LEMAK TRADING SDN BHD\nDATE: 01/03/2019\nSUBTOTAL 10.00\nGST 0.60\n"
    "TOTAL 10.60\nCASH 20.00\nCHANGE 9.40\n"
)
UNCONFIRMED = "KEDAI RUNCIT MAJU\n02/03/2019\nTOTAL 5.00\n"


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _receipts(tmp_path: Path) -> Path:
    truth = {"company": "nasi lemak trading sdn bhd ", "date": "01/03/2019", "address": "-", "total": "10.60"}
    wrong = dict(truth, total="99.99")
    return _write(
        tmp_path / "receipts.jsonl",
        [
            {"id": "a", "text": GOOD, "fields": truth},
            {"id": "b", "text": GOOD, "fields": wrong},
            {"id": "c", "text": UNCONFIRMED, "fields": {"company": "X", "date": "02/03/19", "total": "5.00"}},
            {"id": "d", "text": "", "fields": {"company": "", "date": "", "total": ""}},
        ],
    )


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing the group
        """Unused."""

    return app


def test_eval_scores_accepted_receipts_and_escalates_the_rest(tmp_path: Path) -> None:
    report = evaluate_documents(_receipts(tmp_path))
    assert report == {
        "n": 4,
        "accepted_share": 0.5,
        "accepted_accuracy": {"company": 1.0, "date": 1.0, "total": 0.5},
        "escalated_share": 0.5,
    }


def test_eval_documents_json_prints_exactly_the_contract(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["documents", "--test", str(_receipts(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert set(printed) == {"n", "accepted_share", "accepted_accuracy", "escalated_share"}
    assert set(printed["accepted_accuracy"]) == {"company", "date", "total"}
    assert printed["n"] == 4


def test_eval_documents_prints_a_table_without_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["documents", "--test", str(_receipts(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "accepted without a model" in result.output and "50.0%" in result.output


def test_nothing_accepted_gives_null_accuracies(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [{"text": UNCONFIRMED, "fields": {"company": "X"}}])
    report = evaluate_documents(path)
    assert report["accepted_accuracy"] == {"company": None, "date": None, "total": None}
    assert report["accepted_share"] == 0.0 and report["escalated_share"] == 1.0


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("not json", "<line>"),
        ("[1, 2]", "<line>"),
        ('{"fields": {}}', "text"),
        ('{"text": "x"}', "fields"),
        ('{"text": "x", "fields": {"total": 9.5}}', "fields.total"),
    ],
)
def test_a_bad_line_raises_input_error_with_its_number(tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": GOOD, "fields": {}}) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as raised:
        evaluate_documents(path)
    assert (raised.value.source, raised.value.line, raised.value.field) == (str(path), 2, field)


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as raised:
        evaluate_documents(tmp_path / "absent.jsonl")
    assert raised.value.field == "file"


def _sroie_files() -> list[Path]:
    files = sorted(SROIE.glob("*.jsonl")) if SROIE else []
    if not files:
        message = "SROIE data not found (TIERFLOW_TEST_DATA, ../shared/data or /work/shared/data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: missing data fails the run)")
        pytest.skip(message)
    return files


def test_rules_accept_sroie_receipts_only_when_they_are_right() -> None:
    for path in _sroie_files():
        report = evaluate_documents(path)
        assert report["accepted_share"] > 0
        assert report["accepted_share"] + report["escalated_share"] == pytest.approx(1.0)
        for name, accuracy in report["accepted_accuracy"].items():
            assert accuracy >= 0.98, (path.name, name, report)
