"""A small in-process search index over policy articles (BM25). Pure: plain data in and out.

Embedded mode searches with it; distributed mode searches the same articles with
PostgreSQL full-text search (store/knowledge.py) and reads the same Hit values. An article
belongs to a section (a subfolder of the knowledge folder); a search may keep to some
sections, as a kind's specialists do.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "do",
        "for",
        "from",
        "has",
        "have",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "my",
        "me",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
    ]
)
K1, B = 1.2, 0.75


def tokens(text: str) -> list[str]:
    """Lower-case words without stop words, with a plural 's' taken off."""
    words = (
        w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w
        for w in WORD.findall(text.lower())
    )
    return [w for w in words if w not in STOPWORDS and len(w) > 1]


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    body: str
    section: str = ""  # the part of the knowledge base it belongs to; "": none (the general part)


@dataclass(frozen=True)
class Hit:
    article_id: str
    title: str
    score: float
    snippet: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.article_id,
            "title": self.title,
            "score": round(self.score, 4),
            "snippet": self.snippet,
        }


def snippet(body: str, limit: int = 400) -> str:
    text = " ".join(body.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


class KnowledgeBase:
    """BM25 over titles and bodies; a title word counts twice."""

    def __init__(self, articles: Sequence[Article]) -> None:
        self._articles = list(articles)
        self._counts = [Counter(tokens(f"{a.title} {a.title} {a.body}")) for a in self._articles]
        self._lengths = [sum(c.values()) for c in self._counts]
        self._average = sum(self._lengths) / len(self._lengths) if self._lengths else 0.0
        frequency: Counter[str] = Counter(word for c in self._counts for word in c)
        total = len(self._articles)
        self._idf = {w: math.log(1 + (total - n + 0.5) / (n + 0.5)) for w, n in frequency.items()}

    def __len__(self) -> int:
        return len(self._articles)

    def search(self, text: str, limit: int = 3, sections: Collection[str] = ()) -> list[Hit]:
        """The best matches of `text`, from the articles of `sections` only when any are given."""
        query = set(tokens(text))
        scored = []
        for article, counts, length in zip(self._articles, self._counts, self._lengths, strict=True):
            if sections and article.section not in sections:
                continue
            score = sum(self._term(counts[w], length, self._idf[w]) for w in query if w in counts)
            if score > 0:
                scored.append(Hit(article.id, article.title, score, snippet(article.body)))
        return sorted(scored, key=lambda hit: (-hit.score, hit.article_id))[:limit]

    def _term(self, count: int, length: int, idf: float) -> float:
        norm = K1 * (1 - B + B * length / (self._average or 1))
        return idf * count * (K1 + 1) / (count + norm)
