"""providers.tokens: exact cl100k_base counts, offline, from any thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tierflow.providers.tokens import count_tokens, first_tokens

# cl100k_base counts, each checked against tiktoken's published encodings of the same text
# (e.g. "hello world" -> [15339, 1917]; "tiktoken is great!" -> [83, 1609, 5963, 374, 2294, 0])
KNOWN_CL100K = [
    ("hello world", 2),
    ("tiktoken is great!", 6),
    ("antidisestablishmentarianism", 6),
    ("2 + 2 = 4", 7),
    ("お誕生日おめでとう", 9),
    ("The quick brown fox jumps over the lazy dog.", 10),
]


@pytest.mark.parametrize(("text", "expected"), KNOWN_CL100K)
def test_counts_are_exact_cl100k_base_counts(text: str, expected: int) -> None:
    assert count_tokens(text) == expected
    assert count_tokens(text, "cl100k_base") == expected


def test_an_empty_text_has_no_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("", "o200k_base") == 0


def test_o200k_base_is_available_offline() -> None:
    assert count_tokens("hello world", "o200k_base") == 2


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError):
        count_tokens("hello", "p50k_imaginary")


def test_special_token_markers_in_text_count_as_text() -> None:
    # a user may paste "<|endoftext|>": it is ordinary text, several tokens, and never an error
    assert count_tokens("<|endoftext|>") > 1
    assert count_tokens("before <|endoftext|> after") > count_tokens("before  after")


def test_counts_are_deterministic_across_calls_and_threads() -> None:
    texts = [f"ticket {n}: my parcel has not arrived, order #{n * 7919}" for n in range(200)]
    expected = [count_tokens(text) for text in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(count_tokens, texts)) == expected
        assert list(pool.map(count_tokens, texts)) == expected


def test_first_tokens_cuts_at_a_token_boundary() -> None:
    sentence = "The quick brown fox jumps over the lazy dog."
    assert first_tokens(sentence, 2) == "The quick"
    assert count_tokens(first_tokens(sentence, 2)) == 2
    assert first_tokens("hello world", 1) == "hello"


def test_first_tokens_keeps_a_short_text_whole_and_drops_a_split_character() -> None:
    assert first_tokens("hello world", 2) == "hello world"
    assert first_tokens("hello world", 50) == "hello world"
    assert first_tokens("hello world", 0) == ""
    # the second and third tokens of this text are the two halves of one character
    assert first_tokens("お誕生日おめでとう", 2) == "お"
    assert first_tokens("お誕生日おめでとう", 3) == "お誕"
