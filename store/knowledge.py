"""Policy articles: read from a folder, kept in PostgreSQL, searched with its full-text search."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from tierflow.routing.errors import InputError
from tierflow.routing.retrieval import Article, Hit, snippet, tokens
from tierflow.store.db import insert_stmt
from tierflow.store.models import KnowledgeArticle


def read_articles(folder: Path) -> list[Article]:
    """Every `*.md` file of the folder; the first `# ` line is the title, the id is the file name."""
    if not folder.is_dir():
        raise InputError(str(folder), 0, "<folder>", "no such folder")
    articles = []
    for path in sorted(folder.glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        title = next((line[2:].strip() for line in lines if line.startswith("# ")), path.stem)
        body = "\n".join(line for line in lines if not line.startswith("# ")).strip()
        articles.append(Article(path.stem, title, body))
    return articles


def load_articles(session: Session, articles: list[Article]) -> int:
    """Insert or replace the articles; return how many."""
    for article in articles:
        stmt = insert_stmt(
            session, KnowledgeArticle, {"id": article.id, "title": article.title, "body": article.body}
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={"title": article.title, "body": article.body}
        )
        session.execute(stmt)
    return len(articles)


def stored_articles(session: Session) -> list[Article]:
    rows = session.query(KnowledgeArticle).order_by(KnowledgeArticle.id).all()
    return [Article(row.id, row.title, row.body) for row in rows]


SEARCH = text(
    "SELECT id, title, body, "
    "ts_rank_cd(to_tsvector('english', title || ' ' || title || ' ' || body), q) AS score "
    "FROM kb_articles, to_tsquery('english', :query) AS q "
    "WHERE to_tsvector('english', title || ' ' || body) @@ q ORDER BY score DESC, id LIMIT :limit"
)


def search_postgres(session: Session, query_text: str, limit: int = 3) -> list[Hit]:
    """PostgreSQL full-text search: any of the query's words, ranked by cover density."""
    words = sorted(set(tokens(query_text)))[:64]
    if not words:
        return []
    rows = session.execute(SEARCH, {"query": " | ".join(words), "limit": limit}).all()
    return [Hit(row.id, row.title, float(row.score), snippet(row.body)) for row in rows]
