"""Where a PostgreSQL statement ends: an export's query must be exactly one statement.

A PostgreSQL export runs its query as ``COPY (query) TO STDOUT``, and nothing compiles it
before the first request (the server may not be up when the gateway starts), so the text is
read here, at config load: a ``;`` outside literals and comments ends the statement, and only
comments and white space may follow it. The lexer knows what PostgreSQL's does about where a
``;`` can hide (the "Lexical Structure" chapter of its manual): '...' strings with ''
doubled, E'...' strings with backslash escapes, "..." identifiers, -- line comments, nested
/* */ comments and $tag$...$tag$ dollar quotes. Plain '...' strings are read with
``standard_conforming_strings`` on, PostgreSQL's default since 9.1.

SQLite needs none of this: its own parser compiles the query at config load and refuses a
second statement.
"""

from __future__ import annotations

import re

__all__ = ["single_statement"]

# A dollar quote's opening tag: $$ or $name$; a $ right after an identifier character is
# part of that identifier (PostgreSQL allows a$b), and $1 is a positional parameter.
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]")
_E_STRING_BODY = re.compile(r"(?:[^'\\]|\\.|'')*'", re.DOTALL)
_PLAIN_STRING_BODY = re.compile(r"(?:[^']|'')*'")
_QUOTED_IDENTIFIER_BODY = re.compile(r'(?:[^"]|"")*"')


def single_statement(query: str) -> str:
    """``query`` without its trailing ``;`` (and what follows it); ValueError if it holds
    more than one statement or an unterminated literal or comment."""
    position = _skip_to_semicolon(query, 0)
    if position == len(query):
        return query
    rest = _skip_to_semicolon(query, position + 1, comments_only=True)
    if rest != len(query):
        raise ValueError(f"must be one statement: SQL follows the ';' at character {position + 1}")
    return query[:position]


def _skip_to_semicolon(query: str, position: int, comments_only: bool = False) -> int:
    """The index of the first ``;`` outside literals and comments, or ``len(query)``. With
    ``comments_only``, the index of anything that is neither comment nor white space."""
    length = len(query)
    while position < length:
        char = query[position]
        if query.startswith("--", position):
            newline = query.find("\n", position)
            position = length if newline < 0 else newline + 1
        elif query.startswith("/*", position):
            position = _skip_block_comment(query, position)
        elif char.isspace():
            position += 1
        elif comments_only:
            return position
        elif char == ";":
            return position
        elif char == "'":
            escaped = (
                position > 0
                and query[position - 1] in "eE"
                and not _continues_identifier(query, position - 1)
            )
            body = _E_STRING_BODY if escaped else _PLAIN_STRING_BODY
            position = _match_end(body, query, position + 1, "string")
        elif char == '"':
            position = _match_end(_QUOTED_IDENTIFIER_BODY, query, position + 1, "identifier")
        elif char == "$" and not _continues_identifier(query, position):
            tag = _DOLLAR_TAG.match(query, position)
            if tag is None:
                position += 1
            else:
                close = query.find(tag.group(), tag.end())
                if close < 0:
                    raise ValueError(
                        f"unterminated dollar quote {tag.group()} at character {position + 1}"
                    )
                position = close + len(tag.group())
        else:
            position += 1
    return length


def _continues_identifier(query: str, position: int) -> bool:
    """True if the character before ``position`` belongs to an identifier or a number."""
    return position > 0 and _IDENTIFIER_CHAR.match(query, position - 1) is not None


def _match_end(body: re.Pattern[str], query: str, start: int, what: str) -> int:
    found = body.match(query, start)
    if found is None:
        raise ValueError(f"unterminated quoted {what} at character {start}")
    return found.end()


def _skip_block_comment(query: str, position: int) -> int:
    """Past the ``*/`` closing the comment that opens at ``position`` (they nest)."""
    depth, position = 1, position + 2
    while depth:
        opening = query.find("/*", position)
        closing = query.find("*/", position)
        if closing < 0:
            raise ValueError(f"unterminated /* comment at character {position + 1}")
        if 0 <= opening < closing:
            depth, position = depth + 1, opening + 2
        else:
            depth, position = depth - 1, closing + 2
    return position
