"""Key patterns: ``*`` any run, ``?`` one character, ``[abc]`` / ``[a-z]`` a class,
``[!abc]`` or ``[^abc]`` a negated class. Everything else is literal.

One translation to a regular expression serves in-process matching (the event
hub), SQLite (a registered ``regexp`` function) and PostgreSQL (``~``), so all
three agree on what a pattern means.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from .errors import InvalidPattern

MAX_PATTERN_LENGTH = 1024


def glob_to_regex(pattern: str) -> str:
    """Translate one glob pattern to an anchored regular expression.

    The output uses only ``.``, ``.*``, bracket classes and backslash-escaped
    punctuation, which mean the same in Python ``re`` and PostgreSQL ``~``.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidPattern("pattern too long", details={"max_length": MAX_PATTERN_LENGTH})
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            negate = j < n and pattern[j] in "!^"
            if negate:
                j += 1
            if j < n and pattern[j] == "]":  # a leading ] is a literal member
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                raise InvalidPattern(
                    f"unclosed '[' in pattern {pattern!r}", details={"pattern": pattern}
                )
            body = pattern[i + (1 if negate else 0) : j]
            members = "".join(_class_char(ch) for ch in body)
            out.append(("[^" if negate else "[") + members + "]")
            i = j + 1
        else:
            out.append(_literal(c))
    # \Z, not $: Python's $ also matches before a trailing newline, PostgreSQL's does not.
    out.append("\\Z")
    return "".join(out)


def _literal(c: str) -> str:
    return c if c.isalnum() or c == "_" else "\\" + c


def _class_char(c: str) -> str:
    # Keep ranges ("a-z") working; escape what is special inside a class.
    return "\\" + c if c in "\\]^[" else c


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(glob_to_regex(pattern), re.DOTALL)
    except re.error as exc:
        raise InvalidPattern(
            f"invalid pattern {pattern!r}: {exc}", details={"pattern": pattern}
        ) from exc


def parse_patterns(value: str | Sequence[str] | None, *, max_patterns: int = 64) -> tuple[str, ...]:
    """Split a comma-separated query value (or take a list); validate each pattern."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    patterns = tuple(p.strip() for p in items if isinstance(p, str) and p.strip())
    if any(not isinstance(p, str) for p in items):
        raise InvalidPattern("patterns must be strings")
    if len(patterns) > max_patterns:
        raise InvalidPattern("too many patterns", details={"max_patterns": max_patterns})
    for p in patterns:
        compile_pattern(p)
    return patterns


def matches(patterns: Sequence[str], key: str) -> bool:
    """True when no patterns are given or any pattern matches the whole key."""
    if not patterns:
        return True
    return any(compile_pattern(p).match(key) is not None for p in patterns)
