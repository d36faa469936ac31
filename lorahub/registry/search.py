"""Catalog search: the words a version is found by, and the queries that find it.

Semantics, identical on every backend: text is split into words (runs of letters and digits, case-folded); a
query word matches a version when some word of its name, description, trigger words or tags *starts with* it;
every query word must match. Results come in three tiers, newest version first within each: all query words in
the name, some in the name, none in the name.

Words are split here, in Python, once when a version is added (``search_text`` rows), and the same way for the
query. SQLite then asks its FTS5 index (``search_fts``, created by migration 0001) one tier at a time with
``ORDER BY rowid DESC LIMIT n``, which FTS5 answers without visiting every match; PostgreSQL asks its GIN indexes
over ``tsvector`` columns built from the same words (migration 0005) one tier at a time the same way; the portable
scan (``method="scan"``) reads ``search_text`` with ``LIKE '% word%'`` over the space-separated words. All three
see the same words, so all three return the same rows: ``tests/registry/test_search.py`` checks that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import ColumnElement, and_, case, literal, or_
from sqlalchemy.orm import Mapped
from sqlmodel import col

from lorahub.registry.models import SearchText

_WORD = re.compile(r"[^\W_]+")
MAX_QUERY_WORDS: Final = 8
"""More words than this add little and make the tiered FTS5 queries long; the rest are ignored."""


@dataclass(frozen=True)
class Document:
    """What ``search_text`` stores for one version."""

    name_terms: str
    terms: str


def words(text: str) -> list[str]:
    """The distinct words of ``text``, in order: runs of letters and digits, case-folded."""
    return list(dict.fromkeys(_WORD.findall(text.casefold())))


def document(name: str, description: str, trigger_words: Iterable[str], tags: Iterable[str]) -> Document:
    name_words = words(name)
    other = words(" ".join([description, *trigger_words, *tags]))
    return Document(name_terms=" ".join(name_words), terms=" ".join(dict.fromkeys([*name_words, *other])))


def query_words(text: str) -> list[str]:
    return words(text)[:MAX_QUERY_WORDS]


# --- SQLite FTS5 ------------------------------------------------------------------------------------------------


def fts_tiers(query: list[str]) -> list[str]:
    """FTS5 MATCH expressions for the result tiers, best first; they select disjoint sets of rows.

    Each word becomes a quoted prefix query (``"word"*``); quoting keeps FTS5 syntax out of user input, and the
    words hold only letters and digits anyway.
    """
    everywhere = " AND ".join(f'terms : "{word}"*' for word in query)
    all_in_name = " AND ".join(f'name_terms : "{word}"*' for word in query)
    any_in_name = " OR ".join(f'name_terms : "{word}"*' for word in query)
    tiers = [all_in_name]
    if len(query) > 1:
        tiers.append(f"(({everywhere}) AND ({any_in_name})) NOT ({all_in_name})")
    tiers.append(f"({everywhere}) NOT ({any_in_name})")
    return tiers


# --- PostgreSQL full-text index -------------------------------------------------------------------------------

PG_NAME_MATCH: Final = "search_text.fts_name @@ CAST(:{} AS tsquery)"
PG_TERMS_MATCH: Final = "search_text.fts_terms @@ CAST(:{} AS tsquery)"


def tsquery(query: list[str], operator: str) -> str:
    """A tsquery's text: each word a quoted prefix lexeme (``'word':*``), joined by ``&`` or ``|``. Read by
    ``CAST(… AS tsquery)``, which takes lexemes as written (no parser, no dictionary), as the index stores them."""
    return f" {operator} ".join("'" + word.replace("\\", "\\\\").replace("'", "''") + "':*" for word in query)


def pg_tiers(query: list[str]) -> list[str]:
    """SQL conditions on ``search_text`` for the result tiers, best first, over the binds ``all_words`` and
    ``any_word`` (:func:`tsquery` with ``&`` and ``|``); like :func:`fts_tiers`, they select disjoint rows."""
    all_in_name, any_in_name = PG_NAME_MATCH.format("all_words"), PG_NAME_MATCH.format("any_word")
    everywhere = PG_TERMS_MATCH.format("all_words")
    tiers = [all_in_name]
    if len(query) > 1:
        tiers.append(f"{everywhere} AND {any_in_name} AND NOT {all_in_name}")
    tiers.append(f"{everywhere} AND NOT {any_in_name}")
    return tiers


# --- portable scan ------------------------------------------------------------------------------------------------


def _starts_a_word(column: ColumnElement[str] | Mapped[str], word: str) -> ColumnElement[bool]:
    # Words hold no LIKE wildcards (% and _ are not letters or digits), so no escaping is needed.
    return (literal(" ") + column).like(f"% {word}%")


def scan_match(query: list[str]) -> ColumnElement[bool]:
    """True for rows of ``search_text`` that every query word matches."""
    return and_(*(_starts_a_word(col(SearchText.terms), word) for word in query))


def scan_tier(query: list[str]) -> ColumnElement[int]:
    """0, 1 or 2: all, some or none of the query words in the name."""
    in_name = [_starts_a_word(col(SearchText.name_terms), word) for word in query]
    return case((and_(*in_name), 0), (or_(*in_name), 1), else_=2)
