"""The HTTP API (`tierflow serve`): the OpenAI Files, Batch and Chat Completions endpoints,
tierflow's own endpoints, API keys per tenant, and the Prometheus endpoint.

Thin glue: requests become calls of `tierflow.client.Client` and the `store` queries;
routing stays in `routing/`. Nothing here is built at import time: `api.app.create_api`.
"""
