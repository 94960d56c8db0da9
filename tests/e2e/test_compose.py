"""docker-compose.yml, checked and run: every service's command as a local process.

No Docker engine runs here, so the file is tested by what it runs. Its services'
commands and TIERFLOW_* variables are taken from the file, interpolated as compose
does, with `redis` and `postgres` rewritten to the test's Redis database and a fresh
PostgreSQL database. PostgreSQL itself is the test's server; the redis service's
command is run on a port of its own only to check its broker settings.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from tests.e2e.compose_runner import (
    WORKER_SERVICES,
    attempts_of,
    basic_auth_header,
    check_compose,
    command_args,
    free_port,
    load_compose,
    local_args,
    parse_worker,
    service_environment,
    submit_jobs,
    truncate_store,
    wait_http,
    wait_terminal,
)
from tests.e2e.conftest import Processes, wait_for_workers
from tierflow.worker.app import TierflowCelery

pytestmark = pytest.mark.e2e

BATCH_SIZE = 60
BATCH_TIMEOUT_S = 150.0
FLOWER_USER, FLOWER_PASSWORD = "ops", "compose-test-password"
Change = Callable[[dict[str, Any]], Any]


def shell_environment() -> dict[str, str]:
    """What `docker compose up` reads from the shell here: small concurrencies, free ports, Flower auth."""
    return {
        "TIER_SMALL_CONCURRENCY": "6",
        "TIER_MEDIUM_CONCURRENCY": "4",
        "TIER_LARGE_CONCURRENCY": "3",
        "CLASSIFY_CONCURRENCY": "2",
        "MAINTENANCE_CONCURRENCY": "1",
        "FLOWER_PORT": str(free_port()),
        "PROVIDER_SERVER_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "TIERFLOW_FLOWER_USER": FLOWER_USER,
        "TIERFLOW_FLOWER_PASSWORD": FLOWER_PASSWORD,
    }


def test_the_compose_file_is_consistent_with_tierflow() -> None:
    assert check_compose(load_compose()) == []


def _set_command(service: str, *args: str) -> Change:
    return lambda c: c["services"][service].update(command=list(args))


WRONG_SERVICES: list[tuple[Change, str]] = [
    (
        _set_command("worker-small", "worker", "--tier", "medium", "--concurrency", "${X:-1}"),
        "worker-small: serves ['tier.medium'], must serve only tier.small",
    ),
    (
        _set_command(
            "worker-small", "worker", "--queues", "tier.small,tier.large", "--concurrency", "${X:-1}"
        ),
        "worker-small: serves ['tier.small', 'tier.large']",
    ),
    (
        _set_command(
            "worker-large", "worker", "--tier", "large", "--pool", "prefork", "--concurrency", "${X:-1}"
        ),
        "worker-large: pool prefork",
    ),
    (
        _set_command("worker-medium", "worker", "--tier", "medium", "--concurrency", "8"),
        "worker-medium: --concurrency must come from the environment",
    ),
    (_set_command("worker-classify", "beat"), "exactly one beat service"),
    (_set_command("migrate", "db", "current"), "migrate: command must be"),
    (
        lambda c: c["services"]["worker-classify"]["depends_on"].pop("migrate"),
        "worker-classify: must depend on migrate with condition service_completed_successfully",
    ),
    (
        lambda c: c["services"]["flower"]["environment"].pop("TIERFLOW_FLOWER_PASSWORD"),
        "flower: TIERFLOW_FLOWER_PASSWORD must be passed",
    ),
    (lambda c: c["services"]["flower"]["command"].append("--insecure"), "without --insecure"),
    (lambda c: c["services"]["flower"].update(ports=["5555:5555"]), "beyond the host's loopback"),
    (
        lambda c: c["services"]["worker-small"]["environment"].update(TIERFLOW_SMALL_WORKERS="4"),
        "worker-small: TIERFLOW_SMALL_WORKERS is not a tierflow setting",
    ),
    (
        lambda c: c["services"]["worker-small"]["environment"].update(TIERFLOW_BROKER_URL="redis://other/0"),
        "worker-small: TIERFLOW_BROKER_URL must point at the redis service",
    ),
    (lambda c: c["services"]["provider-server"].pop("profiles"), "provider-server: must be under the demo"),
    (_set_command("redis", "redis-server", "--appendonly", "yes"), "noeviction"),
    (lambda c: c["services"].pop("worker-maintenance"), "no worker service serves maintenance"),
]


@pytest.mark.parametrize(("change", "expected"), WRONG_SERVICES)
def test_a_wrong_service_is_reported(change: Change, expected: str) -> None:
    compose = load_compose()
    # YAML anchors share objects between services: give each its own copy, so a change stays local.
    compose["services"] = {name: copy.deepcopy(s) for name, s in compose["services"].items()}
    change(compose)
    problems = check_compose(compose)
    assert any(expected in problem for problem in problems), problems


def run_redis_service(compose: dict[str, Any], tmp_path: Path) -> None:
    """Run the redis service's command on a port of its own; check it is a broker that never evicts."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = command_args(compose["services"]["redis"], {})
    assert args[0] == "redis-server"
    local = [server, *args[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    popen = subprocess.Popen(local, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the redis service's command did not start"
                time.sleep(0.1)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.close()
        popen.terminate()
        popen.wait(timeout=10)


class ComposeServices:
    """Starts compose services as `tierflow` processes, each with its own interpolated environment."""

    def __init__(self, processes: Processes, compose: dict[str, Any], pg_url: str, redis_url: str) -> None:
        self.processes = processes
        self.services: dict[str, dict[str, Any]] = compose["services"]
        self.shell = shell_environment()
        self.pg_url, self.redis_url = pg_url, redis_url
        self.base_env = {k: v for k, v in processes.env.items() if not k.startswith("TIERFLOW_")}

    def args(self, name: str) -> list[str]:
        return local_args(command_args(self.services[name], self.shell))

    def use_environment_of(self, name: str) -> None:
        env = service_environment(self.services[name], self.shell, self.pg_url, self.redis_url)
        self.processes.env = self.base_env | env

    def run(self, name: str) -> None:
        self.use_environment_of(name)
        self.processes.run(*self.args(name))

    def start(self, name: str) -> None:
        self.use_environment_of(name)
        self.processes.start(name, *self.args(name))


def check_api(stack: ComposeServices, processes: Processes) -> None:
    """The api service, with a key made as the compose file's comment says, answers with it."""
    stack.use_environment_of("migrate")  # `docker compose run --rm migrate keys create --tenant ops`
    key = processes.run("keys", "create", "--tenant", "ops").stdout.rstrip("\n").split("\n")[-1]
    stack.start("api")
    base = f"http://127.0.0.1:{stack.shell['API_PORT']}"
    wait_http(f"{base}/openapi.json", processes)
    request = urllib.request.Request(f"{base}/v1/batches", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        assert json.loads(response.read())["object"] == "list"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/v1/batches", timeout=10)  # noqa: S310 - loopback only
    assert refused.value.code == 401


def check_flower(port: str, processes: Processes) -> None:
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthcheck", processes)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/api/workers", timeout=5)  # noqa: S310 - loopback
    assert refused.value.code == 401
    request = urllib.request.Request(base + "/api/queues/length")  # noqa: S310 - loopback
    request.add_header("Authorization", basic_auth_header(FLOWER_USER, FLOWER_PASSWORD))
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        assert {q["name"] for q in json.load(response)["active_queues"]} >= set(WORKER_SERVICES.values())


def check_attempts(engine: Engine, batch_id: str, nodes: dict[str, tuple[str, ...]]) -> Counter[str]:
    """Every attempt ran on a worker service serving its queue; return the attempts per node."""
    attempts = attempts_of(engine, batch_id)
    unknown = [a for a in attempts if a.worker not in nodes]
    assert not unknown, f"attempts by nodes no compose service runs: {unknown[:5]} (nodes {sorted(nodes)})"
    misrouted = [a for a in attempts if a.queue != f"tier.{a.tier}" or a.queue not in nodes[a.worker]]
    assert not misrouted, f"attempts taken from a queue their worker does not serve: {misrouted[:5]}"
    return Counter(a.worker for a in attempts)


@pytest.mark.timeout(400)
def test_every_service_runs_and_a_batch_finishes_on_every_tier(
    processes: Processes,
    control_app: TierflowCelery,
    store_engine: Engine,
    pg_url: str,
    clean_redis: str,
    tmp_path: Path,
) -> None:
    compose = load_compose()
    run_redis_service(compose, tmp_path)
    stack = ComposeServices(processes, compose, pg_url, clean_redis)
    # migrate first, to completion, as `depends_on: service_completed_successfully` makes compose do.
    stack.run("migrate")
    truncate_store(store_engine)

    nodes: dict[str, tuple[str, ...]] = {}
    for name in (*WORKER_SERVICES, "beat", "flower", "provider-server"):
        args = stack.args(name)
        if args[0] == "worker":
            worker = parse_worker(args[1:])
            nodes[worker.node] = worker.queues
        stack.start(name)
    wait_for_workers(control_app, processes, set(nodes))
    check_flower(stack.shell["FLOWER_PORT"], processes)
    wait_http(f"http://127.0.0.1:{stack.shell['PROVIDER_SERVER_PORT']}/v1/models", processes)
    check_api(stack, processes)

    stack.use_environment_of("worker-classify")  # `docker compose exec worker-classify tierflow submit ...`
    batch_id = submit_jobs(processes, tmp_path / "batch.jsonl", 7, BATCH_SIZE)
    wait_terminal(store_engine, processes, batch_id, BATCH_SIZE, BATCH_TIMEOUT_S)

    by_node = check_attempts(store_engine, batch_id, nodes)
    tier_nodes = {node for node, queues in nodes.items() if queues[0].startswith("tier.")}
    assert tier_nodes <= set(by_node), f"tier workers that took no attempt: {tier_nodes - set(by_node)}"
    processes.check_alive()
    print(f"\n[compose] attempts per worker node: {dict(by_node)}", flush=True)


DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def dockerfile_requirements(tmp_path: Path, with_embeddings: str) -> list[str]:
    """Run the Dockerfile's requirements step (its `python - <<'PY'` heredoc) on this pyproject.toml."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    script = text.split("<<'PY'", 1)[1].split("\nPY\n", 1)[0].split("\n", 1)[1]
    shutil.copyfile(DOCKERFILE.with_name("pyproject.toml"), tmp_path / "pyproject.toml")
    done = subprocess.run(  # noqa: S603 - the Dockerfile's own step
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"WITH_EMBEDDINGS": with_embeddings},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.split()


def test_the_image_runs_tierflow_as_a_non_root_user_with_the_project_dependencies(tmp_path: Path) -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM python:3.11-slim"]
    assert "ARG WITH_EMBEDDINGS=0" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert lines[[n for n, line in enumerate(lines) if line.startswith("ENTRYPOINT")][-1]] == (
        'ENTRYPOINT ["tierflow"]'
    )
    project = tomllib.loads(DOCKERFILE.with_name("pyproject.toml").read_text(encoding="utf-8"))["project"]
    plain = dockerfile_requirements(tmp_path, "0")
    assert set(project["dependencies"]) <= set(plain) and any(r.startswith("flower") for r in plain)
    assert not set(project["optional-dependencies"]["embeddings"]) & set(plain)
    assert set(project["optional-dependencies"]["embeddings"]) <= set(dockerfile_requirements(tmp_path, "1"))
