"""The in-process knowledge base index (BM25) over the project's policy articles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierflow.routing.errors import InputError
from tierflow.routing.retrieval import Article, KnowledgeBase, tokens
from tierflow.store.knowledge import read_articles

KB = Path(__file__).resolve().parents[2] / "examples" / "kb"


def test_tokens_drop_stop_words_and_plurals() -> None:
    assert tokens("The parcels are LATE, and my refund?") == ["parcel", "late", "refund"]


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("my parcel has not moved in tracking for days", "shipping"),
        ("I forgot my password and the account is locked", "account"),
        ("please delete my account and erase my data", "account-closure"),
        ("webhook deliveries to our integration fail", "technical"),
        ("the zip of my tent broke after a week", "warranty"),
        ("I was charged twice for one order", "billing"),
    ],
)
def test_the_matching_policy_article_ranks_first(query: str, best: str) -> None:
    hits = KnowledgeBase(read_articles(KB)).search(query, 3)
    assert hits and hits[0].article_id == best
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_nothing_matches_gives_no_hits_and_an_empty_index_answers_empty() -> None:
    kb = KnowledgeBase([Article("a", "Apples", "Red fruit.")])
    assert kb.search("zebra crossing") == [] and KnowledgeBase([]).search("anything") == []


def test_a_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        read_articles(tmp_path / "nope")
