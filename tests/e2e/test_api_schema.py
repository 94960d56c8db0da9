"""A bounded schemathesis run against the OpenAPI document `tierflow serve` serves.

`tierflow serve` and a worker as a user starts them, on loopback, with the real PostgreSQL and
Redis and the local provider server as the models. Every operation of the served document gets
a bounded number of generated requests, valid ones and (where the schema allows) invalid ones,
sent with a tenant's key; no answer may be a 5xx.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from sqlalchemy import Engine

from tests.e2e.api_support import MODELS, STRENGTHS, create_key, fresh_stack, start_service
from tests.e2e.conftest import Processes
from tierflow.providers.server import ProviderServer
from tierflow.worker.app import TierflowCelery

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
EXAMPLES = 6  # per operation and generation mode
BUDGET_S = 420.0  # the whole run: past it, the operations left get no further examples


@pytest.fixture()
def provider_server() -> Iterator[ProviderServer]:
    with ProviderServer(port=0, models=MODELS, strengths=STRENGTHS) as server:
        yield server


def test_no_generated_request_gets_a_server_error(
    processes: Processes,
    control_app: TierflowCelery,
    provider_server: ProviderServer,
    store_engine: Engine,
    tmp_path: Path,
) -> None:
    fresh_stack(processes, provider_server, store_engine, tmp_path)
    key = create_key(processes, "fuzz")
    base = start_service(processes, control_app).removesuffix("/v1")
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + BUDGET_S
    failures: list[str] = []
    ran: list[str] = []
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            if time.monotonic() > deadline:
                break

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case) -> None:
                response = case.call(base_url=base, headers=headers, timeout=90)
                statuses.append(response.status_code)
                case.validate_response(response, checks=[not_a_server_error])

            try:
                call()
            except Unsatisfiable:
                pass  # the schema leaves no invalid request to make (path ids are any string)
            except Exception as exc:  # a failing example: keep going, report them all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
            ran.append(f"{operation.label} {mode.value}")
    assert len(ran) >= len(list(schema.get_all_operations())), f"the budget ran out: {ran}"
    print(
        f"schemathesis: {len(statuses)} requests over {len(ran)} runs,",
        f"statuses {sorted(Counter(statuses).items())}",
    )
    assert len(statuses) >= 2 * len(ran), statuses  # requests were made, not only generated
    assert {200, 400, 404} <= set(statuses), sorted(set(statuses))
    assert not failures, "\n\n".join(failures) + "\n" + processes.tails()
