"""Product text search on PostgreSQL, with the words FTS5 would index.

A search must find the same products in both stores, and what a "word" is differs between
PostgreSQL's text-search parsers and SQLite's unicode61 tokenizer (hyphenated words, e-mail
addresses, diacritics, scripts that one knows and the other does not). So both use the
same tokenizer: the words of a product are what FTS5's ``unicode61 remove_diacritics 2``
makes of its name, sku and description, asked of an in-memory FTS5 table (sqlite3 is in
the standard library), and stored as a ``tsvector`` of exactly those lexemes
(``array_to_tsvector``: no PostgreSQL parser or dictionary changes them). A query's words
go through the same tokenizer and become a ``tsquery`` of prefix terms, all required:
FTS5's ``"word"*`` for each word, as adapters/sqlite/repositories.py:fts_query writes it.
"""

from __future__ import annotations

import sqlite3
import threading

from adapters.sqlite.repositories import fts_query

_local = threading.local()


def _tokenizer() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute("CREATE VIRTUAL TABLE words USING fts5 (text, tokenize = 'unicode61 remove_diacritics 2')")
        conn.execute("CREATE VIRTUAL TABLE vocabulary USING fts5vocab (words, 'instance')")
        _local.conn = conn
    return conn


#: PostgreSQL's longest lexeme, in bytes. A longer "word" (a run of 683 CJK characters has
#: no separator in it) is left out of the vector: it would be refused whole, and no one
#: searches for a prefix that long.
MAX_LEXEME_BYTES = 2047


def words(*texts: str) -> list[str]:
    """The distinct words FTS5 indexes for these texts (lower-cased, diacritics removed)."""
    conn = _tokenizer()
    conn.execute("BEGIN")
    try:
        conn.executemany("INSERT INTO words (text) VALUES (?)", [(text,) for text in texts])
        terms = [row[0] for row in conn.execute("SELECT DISTINCT term FROM vocabulary")]
    finally:
        conn.execute("ROLLBACK")  # the table stays empty between calls
    return [term for term in terms if len(term.encode()) <= MAX_LEXEME_BYTES]


def tsquery(text: str) -> str | None:
    """A ``tsquery`` (to be cast from text) matching what FTS5 matches for this free text:
    fts_query's words, each a prefix, all required (each as the tokenizer reads it). None if
    the text has no word. Lexemes are quoted, a quote or backslash in one doubled, so that
    no character of the text reaches tsquery syntax."""
    query = fts_query(text)
    if query is None:
        return None
    # fts_query's words are quoted and free of quotes: '"lamp"* "desk"*'.
    terms = sorted({term for word in query.split(" ") for term in words(word[1:-2])})
    if not terms:
        return None
    return " & ".join("'" + term.replace("\\", "\\\\").replace("'", "''") + "':*" for term in terms)
