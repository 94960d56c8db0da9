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


def test_the_example_articles_are_read_with_the_subfolder_as_their_section() -> None:
    sections = {article.id: article.section for article in read_articles(KB)}
    assert sections["refunds"] == sections["billing"] == "billing"
    assert sections["technical"] == "technical" and sections["returns"] == "shipping"
    assert sections["warranty"] == "", "an article at the top belongs to no section"


def test_a_search_kept_to_sections_finds_only_their_articles() -> None:
    kb = KnowledgeBase(read_articles(KB))
    query = "please refund me: my parcel never arrived and the tracking shows nothing"
    everywhere = {hit.article_id for hit in kb.search(query, 5)}
    billing = kb.search(query, 5, sections=("billing",))
    assert "shipping" in everywhere and billing
    assert {hit.article_id for hit in billing} <= {"billing", "refunds"}
    assert kb.search(query, 5, sections=("no_such_section",)) == []


def test_two_articles_of_one_name_in_different_sections_are_refused(tmp_path: Path) -> None:
    for section in ("a", "b"):
        (tmp_path / section).mkdir()
        (tmp_path / section / "same.md").write_text("# Same\nBody.", encoding="utf-8")
    with pytest.raises(InputError, match="an article named 'same' is also at a/same.md"):
        read_articles(tmp_path)
