"""The workers' semantic stage fitted as the settings say: the linear classifier, or a route tree.

A real worker classifies a job whose rules are unsure; what it decides is compared
with the same classifier fitted here, in this process, on the same routes file,
and with the default nearest-centroid stage, which scores the same text otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.conftest import running_worker, wait_terminal, write_jobs
from tierflow.providers.labelled import read_labelled
from tierflow.providers.semantic_fit import ClassifierKind, Predicted, fit_classifier, predict
from tierflow.routing.policy import Policy
from tierflow.store.db import transaction
from tierflow.store.models import Job
from tierflow.store.policies import publish_policy
from tierflow.tasks.runtime import build_encoder, default_policy
from tierflow.tasks.submission import submit_file

ROUTES = Path(__file__).resolve().parents[2] / "examples" / "routes" / "support_intents.jsonl"
TEXT = "The buckle on my rucksack snapped on the first hike."
TREE = {
    "money": ["refund", "billing"],
    "orders": ["returns", "shipping", "warranty"],
    "access": ["account", "account_closure", "technical"],
}


def require_embeddings_extra() -> None:
    if os.environ.get("CI", "").lower() != "true":  # under CI the embeddings extra must be there
        pytest.importorskip("sentence_transformers")


def expected(runtime: Any, kind: ClassifierKind, hierarchy: Path | None = None) -> Predicted:
    """What the classifier of `kind`, fitted here on the same routes, makes of TEXT."""
    encoder = build_encoder(runtime.settings, "local")
    routes = fit_classifier(encoder, read_labelled(ROUTES), ROUTES, kind, hierarchy)
    return predict(routes, encoder.inner.encode([TEXT]))[0]


def analysed(make_app: Any, tmp_path: Path, **settings: Any) -> tuple[dict[str, Any], Any]:
    """The stored analysis of one support job with TEXT, classified by a real worker."""
    app, runtime = make_app(semantic_routes=ROUTES, embeddings_cache_dir=tmp_path / "cache", **settings)
    with transaction(runtime.sessions) as session:
        base: Policy = default_policy(runtime.settings)
        publish = base.model_copy(update={"rules_confidence": 0.99})
        publish_policy(session, publish, "test: the semantic stage decides")
    jobs = [{"id": "cls-1", "kind": "support", "payload": {"text": TEXT}}]
    with running_worker(app):
        report = submit_file(app, runtime, write_jobs(tmp_path / "jobs.jsonl", jobs))
        wait_terminal(runtime, report.batch_id, timeout_s=180)
    with transaction(runtime.sessions) as session:
        job = session.execute(select(Job).where(Job.id == "cls-1")).scalar_one()
        return dict(job.analysis), runtime


def test_a_worker_set_to_the_linear_classifier_decides_with_it(make_app: Any, tmp_path: Path) -> None:
    require_embeddings_extra()
    analysis, runtime = analysed(make_app, tmp_path, semantic_classifier="linear")
    linear = expected(runtime, ClassifierKind.LINEAR)
    nearest = expected(runtime, ClassifierKind.NEAREST)
    assert linear.decided, "the linear classifier is sure of this text on these routes"
    assert (analysis["stage"], analysis["intent"]) == ("semantic", linear.route) == ("semantic", "warranty")
    assert analysis["confidence"] == pytest.approx(linear.score, abs=1e-5)
    assert abs(linear.score - nearest.score) > 0.01, "the score is the linear one, not the centroids'"


def test_a_worker_with_a_route_tree_walks_it(make_app: Any, tmp_path: Path) -> None:
    require_embeddings_extra()
    tree = tmp_path / "support_tree.json"
    tree.write_text(json.dumps(TREE, indent=2) + "\n", encoding="utf-8")
    analysis, runtime = analysed(make_app, tmp_path, semantic_classifier="linear", semantic_hierarchy=tree)
    walked = expected(runtime, ClassifierKind.LINEAR, tree)
    flat = expected(runtime, ClassifierKind.LINEAR)
    # the last level weighs three intents of one domain, the flat routes all eight
    assert walked.score != pytest.approx(flat.score, abs=1e-5), "a level's score, not the flat routes'"
    domain = next(name for name, intents in TREE.items() if walked.route in intents)
    assert walked.runner_up in TREE[domain], "the last level's runner-up is a sibling in the domain"
    if walked.decided:
        assert (analysis["stage"], analysis["intent"]) == ("semantic", walked.route)
        assert analysis["confidence"] == pytest.approx(walked.score, abs=1e-6)
    else:
        assert analysis["stage"] != "semantic"
        assert f"semantic unsure: {walked.route} ({walked.score:.2f})" in analysis["reasons"]
