"""docker-compose.yml, read and checked, and its services' commands run as local processes.

There is no Docker engine where the tests run, so the compose file is tested by what
it runs. `check_compose` returns every inconsistency it finds (an empty list when
there is none), so a test can feed it a modified file and see the problem named.
`service_command` and `service_environment` turn a service into the `tierflow`
arguments and TIERFLOW_* variables a container would get, after compose's variable
interpolation, with the host names `redis` and `postgres` rewritten to the test's
PostgreSQL database and Redis database.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from sqlalchemy import Engine, select, text

from tests.e2e.conftest import Processes
from tests.e2e.test_workers import TERMINAL, varied_jobs
from tierflow.routing.states import Tier
from tierflow.store.models import Attempt, Base, Job
from tierflow.worker.app import ALL_QUEUES, CLASSIFY_QUEUE, MAINTENANCE_QUEUE
from tierflow.worker.cli_ops import worker_argv, worker_queues
from tierflow.worker.settings import Settings

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
HOST = socket.gethostname()

# Each worker service and the one queue it must serve.
WORKER_SERVICES = {
    "worker-classify": CLASSIFY_QUEUE,
    "worker-small": Tier.SMALL.queue,
    "worker-medium": Tier.MEDIUM.queue,
    "worker-large": Tier.LARGE.queue,
    "worker-maintenance": MAINTENANCE_QUEUE,
}
TIERFLOW_SERVICES = (*WORKER_SERVICES, "migrate", "beat", "flower", "provider-server", "api")
EXPECTED_SERVICES = {"redis", "postgres", *TIERFLOW_SERVICES}
HTTP_POOLS = ("threads", "gevent")  # the tier work waits on HTTP
AFTER_MIGRATE = {
    "redis": "service_healthy",
    "postgres": "service_healthy",
    "migrate": "service_completed_successfully",
}
SETTINGS_FIELDS = set(Settings.model_fields)
_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{path} is not a mapping"
    return loaded


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}` and `$$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op in (":-", ":?") and not current or op in ("-", "?") and current is None:
            if op.endswith("?"):
                raise ValueError(f"${{{name}}} is required: {arg}")
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def command_args(service: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The service's command as an argument list, interpolated (the image's entrypoint is `tierflow`)."""
    command = service.get("command", [])
    args = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    return [interpolate(arg, env) for arg in args]


def environment(service: dict[str, Any], env: dict[str, str]) -> dict[str, str | None]:
    """The service's environment after interpolation; None for a name passed through but unset."""
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) if "=" in item else (item, None) for item in declared)
    resolved: dict[str, str | None] = {}
    for name, value in declared.items():
        resolved[name] = env.get(name) if value is None else interpolate(str(value), env)
    return resolved


def option_values(args: list[str], option: str) -> list[str]:
    """Every value given to `option` (as `--opt value` or `--opt=value`)."""
    values = []
    for index, arg in enumerate(args):
        if arg == option and index + 1 < len(args):
            values.append(args[index + 1])
        elif arg.startswith(option + "="):
            values.append(arg.split("=", 1)[1])
    return values


def last_value(args: list[str], option: str) -> str | None:
    """The value of an option given once (the last one wins, as on a command line)."""
    values = option_values(args, option)
    return values[-1] if values else None


@dataclass(frozen=True)
class WorkerCommand:
    """What a `tierflow worker` command line serves, as `tierflow worker` itself reads it."""

    queues: tuple[str, ...]
    pool: str
    node: str  # the node name, %h expanded to this host
    concurrency: str | None


def parse_worker(args: list[str]) -> WorkerCommand:
    tiers = [Tier(value) for value in option_values(args, "--tier")]
    served = worker_queues(last_value(args, "--queues"), tiers)
    concurrency = last_value(args, "--concurrency")
    argv = worker_argv(served, last_value(args, "--pool"), None, None, "INFO", last_value(args, "--hostname"))
    return WorkerCommand(
        queues=tuple(served),
        pool=argv[argv.index("--pool") + 1],
        node=argv[argv.index("--hostname") + 1].replace("%h", HOST),
        concurrency=concurrency,
    )


def check_compose(compose: dict[str, Any]) -> list[str]:
    """Every inconsistency of the compose file with tierflow; empty when there is none."""
    services: dict[str, dict[str, Any]] = compose.get("services") or {}
    problems = [f"missing service {name}" for name in sorted(EXPECTED_SERVICES - set(services))]
    for name, service in services.items():
        problems += _check_image(name, service)
        problems += _check_environment_names(name, service)
    problems += _check_workers(services)
    problems += _check_dependencies(services)
    problems += _check_one_beat(services)
    problems += _check_broker_and_store(services)
    problems += _check_flower(services.get("flower"))
    problems += _check_provider_server(services.get("provider-server"))
    problems += _check_api(services.get("api"))
    return problems


def _check_image(name: str, service: dict[str, Any]) -> list[str]:
    if name in TIERFLOW_SERVICES:
        build = service.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        if context != ".":
            return [f"{name}: must be built from this repository's Dockerfile (build context '.')"]
        if not command_args(service, {}):
            return [f"{name}: no command"]
        return []
    return [] if service.get("image") or service.get("build") else [f"{name}: neither image nor build"]


def _check_environment_names(name: str, service: dict[str, Any]) -> list[str]:
    names = environment(service, {})
    return [
        f"{name}: {var} is not a tierflow setting"
        for var in names
        if var.startswith("TIERFLOW_") and var.removeprefix("TIERFLOW_").lower() not in SETTINGS_FIELDS
    ]


def _check_workers(services: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    served: set[str] = set()
    for name, service in services.items():
        args = command_args(service, {})
        if not args or args[0] != "worker":
            if name in WORKER_SERVICES:
                problems.append(f"{name}: command {args} is not `tierflow worker`")
            continue
        try:
            command = parse_worker(args[1:])
        except Exception as exc:  # a ConfigError from tierflow's own parsing, or a bad tier
            problems.append(f"{name}: {args} does not parse: {exc}")
            continue
        served |= set(command.queues)
        expected = WORKER_SERVICES.get(name)
        if expected is not None and command.queues != (expected,):
            problems.append(f"{name}: serves {list(command.queues)}, must serve only {expected}")
        if expected and expected.startswith("tier.") and command.pool not in HTTP_POOLS:
            problems.append(f"{name}: pool {command.pool}; a tier worker needs one of {HTTP_POOLS}")
        raw = service.get("command", [])
        if "${" not in " ".join(raw if isinstance(raw, list) else [raw]) or command.concurrency is None:
            problems.append(f"{name}: --concurrency must come from the environment (${{...}})")
    problems += [f"no worker service serves {queue}" for queue in ALL_QUEUES if queue not in served]
    return problems


def _depends(service: dict[str, Any]) -> dict[str, str]:
    declared = service.get("depends_on") or {}
    if isinstance(declared, list):
        return {name: "service_started" for name in declared}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in declared.items()}


def _check_dependencies(services: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name in (*WORKER_SERVICES, "beat", "api"):
        if name not in services:
            continue
        depends = _depends(services[name])
        for dependency, condition in AFTER_MIGRATE.items():
            if depends.get(dependency) != condition:
                problems.append(f"{name}: must depend on {dependency} with condition {condition}")
    for name in ("redis", "postgres"):
        if name in services and not services[name].get("healthcheck"):
            problems.append(f"{name}: needs a healthcheck (the workers wait for it)")
    for name, service in services.items():
        problems += [f"{name}: depends on unknown {d}" for d in _depends(service) if d not in services]
    return problems + _check_migrate(services.get("migrate", {}))


def _check_migrate(migrate: dict[str, Any]) -> list[str]:
    problems = []
    if command_args(migrate, {})[:2] != ["db", "upgrade"]:
        problems.append(f"migrate: command must be `tierflow db upgrade`, not {command_args(migrate, {})}")
    if _depends(migrate).get("postgres") != "service_healthy":
        problems.append("migrate: must wait for postgres to be healthy")
    if str(migrate.get("restart", "no")) not in ("no", "False", "false"):
        problems.append("migrate: a one-shot service must not restart")
    return problems


def _check_one_beat(services: dict[str, dict[str, Any]]) -> list[str]:
    beats = [name for name, service in services.items() if command_args(service, {})[:1] == ["beat"]]
    if beats != ["beat"]:
        return [f"exactly one beat service named beat, found {beats}"]
    replicas = ((services["beat"].get("deploy") or {}).get("replicas")) or 1
    return [] if replicas == 1 else [f"beat: {replicas} replicas; run exactly one"]


def _check_broker_and_store(services: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name in TIERFLOW_SERVICES:
        env = environment(services.get(name, {}), {})
        wanted = {"TIERFLOW_DATABASE_URL": "postgres", "TIERFLOW_BROKER_URL": "redis"}
        wanted |= {} if name == "migrate" else {"TIERFLOW_RESULT_BACKEND": "redis"}
        for var, host in wanted.items():
            if urlsplit(env.get(var) or "").hostname != host:
                problems.append(f"{name}: {var} must point at the {host} service")
    redis_args = command_args(services.get("redis", {}), {})
    if option_values(redis_args, "--maxmemory-policy") != ["noeviction"]:
        problems.append("redis: a Celery broker must run with --maxmemory-policy noeviction")
    if option_values(redis_args, "--appendonly") != ["yes"]:
        problems.append("redis: needs --appendonly yes")
    for name, path in (("redis", "/data"), ("postgres", "/var/lib/postgresql/data")):
        volumes = [str(v) for v in services.get(name, {}).get("volumes", [])]
        if not any(v.endswith(":" + path) for v in volumes):
            problems.append(f"{name}: {path} must be on a volume")
    return problems


def _check_flower(flower: dict[str, Any] | None) -> list[str]:
    if flower is None:
        return []
    problems = []
    args = command_args(flower, {})
    if args[:1] != ["flower"] or "--insecure" in args:
        problems.append(f"flower: command must be `tierflow flower` without --insecure, not {args}")
    env = environment(flower, {})
    problems += [
        f"flower: {var} must be passed to it (basic auth)"
        for var in ("TIERFLOW_FLOWER_USER", "TIERFLOW_FLOWER_PASSWORD")
        if var not in env
    ]
    ports = [str(p) for p in flower.get("ports", [])]
    problems += [
        f"flower: port {p} published beyond the host's loopback" for p in ports if "127.0.0.1:" not in p
    ]
    return problems


def _check_api(api: dict[str, Any] | None) -> list[str]:
    if api is None:
        return []
    args = command_args(api, {})
    problems = [] if args[:1] == ["serve"] else ["api: command must be `tierflow serve`"]
    if any(not str(port).startswith("127.0.0.1:") for port in api.get("ports") or []):
        problems.append("api: publish its port on 127.0.0.1 only")
    return problems


def _check_provider_server(server: dict[str, Any] | None) -> list[str]:
    if server is None:
        return []
    problems = []
    if server.get("profiles") != ["demo"]:
        problems.append("provider-server: must be under the demo profile only")
    if command_args(server, {})[:1] != ["provider-server"]:
        problems.append("provider-server: command must be `tierflow provider-server`")
    return problems


def local_url(url: str, pg_url: str, redis_url: str) -> str:
    """A compose URL with its service host rewritten to the test's database or Redis database."""
    parts = urlsplit(url)
    if parts.hostname == "postgres":
        return pg_url
    if parts.hostname == "redis":
        test = urlsplit(redis_url)
        return urlunsplit((parts.scheme, test.netloc, test.path, parts.query, parts.fragment))
    return url


def service_environment(
    service: dict[str, Any], shell: dict[str, str], pg_url: str, redis_url: str
) -> dict[str, str]:
    """The TIERFLOW_* variables the container would get, pointed at the test's services."""
    resolved = environment(service, shell)
    return {
        name: local_url(value, pg_url, redis_url)
        for name, value in resolved.items()
        if value is not None and name.startswith("TIERFLOW_")
    }


def local_args(args: list[str]) -> list[str]:
    """A container's command for a local process: listen on loopback only."""
    return ["127.0.0.1" if arg == "0.0.0.0" else arg for arg in args]  # noqa: S104 - rewritten away


# Helpers shared by the operating tests (compose, scaling, Flower).


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def wait_http(url: str, processes: Processes | None = None, timeout_s: float = 30.0) -> None:
    """Until the server at `url` answers anything at all (any HTTP status); fail early if a process ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        if processes is not None:
            processes.check_alive()
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - loopback only
            return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer in {timeout_s:.0f}s: {exc}") from exc
            time.sleep(0.2)


def truncate_store(engine: Engine) -> None:
    """Empty every table of the migrated test database (it is shared by the session's tests)."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def wait_terminal(engine: Engine, processes: Processes, batch_id: str, count: int, timeout_s: float) -> None:
    """Until all `count` jobs of the batch are terminal; fail with the states otherwise."""
    deadline = time.monotonic() + timeout_s
    query = select(Job.state).where(Job.batch_id == batch_id)
    while True:
        processes.check_alive()
        with engine.connect() as connection:
            states = Counter(connection.execute(query).scalars())
        if sum(states[state] for state in TERMINAL) == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} not terminal after {timeout_s:.0f}s: {dict(states)}")
        time.sleep(0.2)


def submit_jobs(processes: Processes, path: Path, batch: int, count: int) -> str:
    """Write `count` example jobs and submit them with `tierflow submit`; return the batch id."""
    path.write_text("".join(json.dumps(job) + "\n" for job in varied_jobs(batch, count)), encoding="utf-8")
    report = json.loads(processes.run("submit", str(path), "--json").stdout)
    assert report["accepted"] == count and not report["rejected"], report
    return str(report["batch_id"])


def attempts_of(engine: Engine, batch_id: str) -> list[Any]:
    """(tier, queue, worker) of every attempt of the batch."""
    query = (
        select(Attempt.tier, Attempt.queue, Attempt.worker)
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.batch_id == batch_id)
    )
    with engine.connect() as connection:
        return list(connection.execute(query).all())
