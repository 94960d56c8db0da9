"""Spans around model calls, when OpenTelemetry is installed (the `otel` extra) and configured.

Owns `call_span`: a span per SDK call named `tierflow.model_call` with the provider, model,
outcome, tokens and cost; never the prompt, the answer or a key. Without the
`opentelemetry-api` package, or with no tracer provider set (`worker/tracing.py` sets one when
traces are on), it does nothing. Must not import the SDKs, Celery or the worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tierflow.providers.base import Completion

try:
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is not installed
    _trace = None  # type: ignore[assignment]

SPAN_NAME = "tierflow.model_call"


class CallSpan:
    """What a model call reports onto its span."""

    def __init__(self, span: Any) -> None:
        self._span = span

    def succeeded(self, completion: Completion) -> None:
        if self._span is None:
            return
        self._span.set_attributes(
            {
                "tierflow.outcome": "ok",
                "gen_ai.usage.input_tokens": completion.input_tokens,
                "gen_ai.usage.output_tokens": completion.output_tokens,
                "tierflow.cached_input_tokens": completion.cached_input_tokens,
                "tierflow.cost_usd": completion.cost_usd,
            }
        )

    def failed(self, outcome: str) -> None:
        if self._span is None:
            return
        self._span.set_attribute("tierflow.outcome", outcome)
        self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, outcome))


@contextmanager
def call_span(ref: str, attempt: int) -> Iterator[CallSpan]:
    """A span around one call of `ref` ("provider:model"), the `attempt`-th at that model."""
    if _trace is None:
        yield CallSpan(None)
        return
    provider, _, model = ref.partition(":")
    tracer = _trace.get_tracer("tierflow.providers")
    attributes: dict[str, str | int] = {
        "tierflow.provider": provider,
        "gen_ai.request.model": model,
        "tierflow.call_attempt": attempt,
    }
    with tracer.start_as_current_span(
        SPAN_NAME, kind=_trace.SpanKind.CLIENT, attributes=attributes, record_exception=False
    ) as span:
        yield CallSpan(span)
