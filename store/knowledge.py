"""Policy articles: read from a folder, kept in PostgreSQL, searched with its full-text search.

The folder's subfolders are its sections (`billing/refunds.md` is the article `refunds` of the
section `billing`; an article at the top has none). A search may keep to some sections: a
kind's specialist retrieves from its own.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from tierflow.routing.errors import InputError
from tierflow.routing.retrieval import Article, Hit, snippet, tokens
from tierflow.store.db import insert_stmt
from tierflow.store.models import KnowledgeArticle

MAX_SECTION = 64  # the column's width


def read_articles(folder: Path) -> list[Article]:
    """Every `*.md` file of the folder and its subfolders; the first `# ` line is the title, the id
    is the file name, the section is the subfolder (its path below the folder). Two files of one
    name are refused: an article's id names it alone."""
    if not folder.is_dir():
        raise InputError(str(folder), 0, "<folder>", "no such folder")
    articles: list[Article] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.md")):
        relative = path.relative_to(folder)
        if path.stem in seen:
            why = f"an article named {path.stem!r} is also at {seen[path.stem].as_posix()}"
            raise InputError(str(path), 0, "<file>", why)
        seen[path.stem] = relative
        section = relative.parent.as_posix() if relative.parent != Path(".") else ""
        if len(section) > MAX_SECTION:
            why = f"section {section!r} is over {MAX_SECTION} characters"
            raise InputError(str(path), 0, "<folder>", why)
        lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
        title = next((line[2:].strip() for line in lines if line.startswith("# ")), path.stem)
        body = "\n".join(line for line in lines if not line.startswith("# ")).strip()
        articles.append(Article(path.stem, title, body, section))
    return articles


def load_articles(session: Session, articles: list[Article]) -> int:
    """Insert or replace the articles; return how many."""
    for article in articles:
        row = {"id": article.id, "title": article.title, "body": article.body, "section": article.section}
        stmt = insert_stmt(session, KnowledgeArticle, row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"title": article.title, "body": article.body, "section": article.section},
        )
        session.execute(stmt)
    return len(articles)


def stored_articles(session: Session) -> list[Article]:
    rows = session.query(KnowledgeArticle).order_by(KnowledgeArticle.id).all()
    return [Article(row.id, row.title, row.body, row.section) for row in rows]


SELECT = (
    "SELECT id, title, body, "
    "ts_rank_cd(to_tsvector('english', title || ' ' || title || ' ' || body), q) AS score "
    "FROM kb_articles, to_tsquery('english', :query) AS q "
    "WHERE to_tsvector('english', title || ' ' || body) @@ q "
)
ORDER = "ORDER BY score DESC, id LIMIT :limit"
SEARCH = text(SELECT + ORDER)
SEARCH_SECTIONS = text(SELECT + "AND section IN :sections " + ORDER).bindparams(
    bindparam("sections", expanding=True)
)


def search_postgres(
    session: Session, query_text: str, limit: int = 3, sections: Collection[str] = ()
) -> list[Hit]:
    """PostgreSQL full-text search: any of the query's words, ranked by cover density; from the
    articles of `sections` only when any are given."""
    words = sorted(set(tokens(query_text)))[:64]
    if not words:
        return []
    params: dict[str, object] = {"query": " | ".join(words), "limit": limit}
    if sections:
        params["sections"] = sorted(sections)
    rows = session.execute(SEARCH_SECTIONS if sections else SEARCH, params).all()
    return [Hit(row.id, row.title, float(row.score), snippet(row.body)) for row in rows]
