"""The local provider server: OpenAI Chat Completions and Anthropic Messages on loopback.

It answers from replay files (recorded responses by exact prompt), else from the
deterministic rules of `providers.rules`, else with the protocol's own 404; with
settable latency and injected faults that can be changed while it runs. Usage
counts tokens in cl100k_base (`providers.tokens`). OpenAI embeddings are real,
from the local all-MiniLM-L6-v2 model (the `embeddings` extra). The demo, the
tests and the benchmarks reach it through the real SDKs.

    app.py             ProviderServer (in-process, context manager) and serve() for the CLI
    handler.py         routes, shared state, request counts, faults on the wire
    openai_wire.py     the OpenAI protocol: request parsing, response and error bodies
    anthropic_wire.py  the Anthropic protocol: the same
    wire.py            what both protocols share: ChatCall, Reply, usage, error kinds
    embeddings.py      POST /v1/embeddings: request, the lazily loaded local model, response body
    answers.py         replay book, served models, strengths, the answer of a model
    faults.py          fault and latency plans

Must not import the openai or anthropic SDKs: it is the other side of the wire.
"""

from __future__ import annotations

from tierflow.providers.server.answers import DEFAULT_MODELS, Answerer, ReplayBook, default_strength
from tierflow.providers.server.app import DEFAULT_PORT, ProviderServer, serve
from tierflow.providers.server.faults import Fault, FaultPlanSpec, FaultRule, Latency, LatencySpec

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_PORT",
    "Answerer",
    "Fault",
    "FaultPlanSpec",
    "FaultRule",
    "Latency",
    "LatencySpec",
    "ProviderServer",
    "ReplayBook",
    "default_strength",
    "serve",
]
