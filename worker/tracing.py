"""OpenTelemetry traces: the optional `otel` extra, on with `TIERFLOW_TRACES=console|otlp`.

`install(settings)` (called by `create_app`) sets one tracer provider per process, instruments
Celery (a span per task sent and run) and, on first use in a task, the runtime's SQLAlchemy
engine (a span per statement: its SQL with placeholders, never the values bound to them).
`providers/tracing.py` adds a span per SDK call. Every span started while a task runs, or
inside `worker.logs.log_ids(...)`, carries the job id, attempt, expert and batch id of that
context (`tierflow.job_id`, ...). Ids only: never a payload, a prompt, an answer or a key.

The exporter: `console` (stdout), `otlp` (OTLP over HTTP; the endpoint from the standard
OTEL_EXPORTER_OTLP_* variables), or one given to `install` (a test's in-memory exporter).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tierflow.routing.errors import ConfigError
from tierflow.worker.logs import current_ids
from tierflow.worker.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

EXTRA = "pip install 'tierflow[otel]'"
ID_ATTRIBUTES = {"job_id": "tierflow.job_id", "batch_id": "tierflow.batch_id", "attempt": "tierflow.attempt"}
ID_ATTRIBUTES |= {"expert": "tierflow.expert", "task": "tierflow.task"}
_state: dict[str, Any] = {}


def install(settings: Settings, exporter: SpanExporter | None = None) -> bool:
    """Turn traces on for this process when the settings ask (or `exporter` is given); True if on.

    Raises:
        ConfigError: traces are asked for but the `otel` extra is not installed.
    """
    if settings.traces == "off" and exporter is None:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        raise ConfigError("TIERFLOW_TRACES", f"traces need the otel extra: {EXTRA}") from None
    provider = _state.get("provider")
    if provider is None:
        provider = TracerProvider(resource=Resource.create({"service.name": settings.traces_service_name}))
        provider.add_span_processor(_ids_processor())
        trace.set_tracer_provider(provider)
        _instrument_celery(provider)
        _state["provider"] = provider
    processor = _processor(settings, exporter)
    if processor is not None:
        provider.add_span_processor(processor)
    return True


def tracer_provider() -> TracerProvider | None:
    """This process's tracer provider, None while traces are off."""
    return _state.get("provider")


def _ids_processor() -> SpanProcessor:
    from opentelemetry.sdk.trace import SpanProcessor

    class IdsProcessor(SpanProcessor):  # type: ignore[misc,unused-ignore]
        """Puts the ids of the running task or request onto every span it starts."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for name, value in current_ids().items():
                if name in ID_ATTRIBUTES:
                    span.set_attribute(ID_ATTRIBUTES[name], value)

    return IdsProcessor()


def _processor(settings: Settings, exporter: SpanExporter | None) -> SpanProcessor | None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if exporter is not None:
        return SimpleSpanProcessor(exporter)
    if settings.traces == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    if settings.traces == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("TIERFLOW_TRACES", f"otlp needs the otel extra: {EXTRA}") from None
        return BatchSpanProcessor(OTLPSpanExporter())
    return None


def _instrument_celery(provider: TracerProvider) -> None:
    from celery import signals
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call,unused-ignore]
    # after the instrumentor's own prerun handler, which starts the task's span
    signals.task_prerun.connect(_task_started, weak=False)


def _task_started(task: Any = None, **_: Any) -> None:
    """Name the task's span with its ids; instrument the runtime's engine the first time."""
    from opentelemetry import trace

    span = trace.get_current_span()
    for name, value in current_ids().items():
        if name in ID_ATTRIBUTES:
            span.set_attribute(ID_ATTRIBUTES[name], value)
    if task is not None:
        from tierflow.tasks.runtime import runtime_for

        instrument_engine(runtime_for(task.app).engine)


def instrument_engine(engine: Any) -> None:
    """A span per SQL statement of `engine` (once per engine; nothing while traces are off)."""
    provider = _state.get("provider")
    engines: set[int] = _state.setdefault("engines", set())
    if provider is None or id(engine) in engines:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    usage = get_meter("tierflow.sqlalchemy").create_up_down_counter("db.client.connections.usage")
    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call,unused-ignore]
    engines.add(id(engine))


@contextmanager
def traced(name: str, **ids: str | int | None) -> Iterator[Any]:
    """A span named `name` carrying `ids` as tierflow.* attributes; None while traces are off."""
    provider = _state.get("provider")
    if provider is None:
        yield None
        return
    attributes = {f"tierflow.{key}": value for key, value in ids.items() if value is not None}
    with provider.get_tracer("tierflow").start_as_current_span(name, attributes=attributes) as span:
        yield span
