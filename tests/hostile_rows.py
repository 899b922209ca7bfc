"""Hostile corpus rows and what the job's _errors.jsonl says of each: one table for the tests
(tests/test_jobs_hostile.py) and the benchmark (benchmarks/hostile_corpus.py)."""

from __future__ import annotations

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE = b"9" * 5_000

POISON: list[tuple[str, bytes, str]] = [  # (kind, JSONL line without its newline, what its reason in _errors.jsonl says)
    ("blank line", b"", "empty line"),
    ("missing text", b'{"doc": "p"}', "missing text"),
    ("null text", b'{"doc": "p", "text": null}', "missing text"),
    ("int text", b'{"doc": "p", "text": 5}', "not text (int)"),
    ("list text", b'{"doc": "p", "text": ["a"]}', "not text (list)"),
    ("dict text", b'{"doc": "p", "text": {"a": 1}}', "not text (dict)"),
    ("invalid JSON", b"not json at all", "invalid JSON (Expecting value"),
    ("bad UTF-8", b'{"doc": "p", "text": "caf\xe9"}', "undecodable bytes"),
    ("lone surrogate text", b'{"doc": "p", "text": "\\ud800 lone"}', "lone surrogate"),
    ("empty text", b'{"doc": "p", "text": ""}', "empty text"),
    ("whitespace text", b'{"doc": "p", "text": "   "}', "empty text"),
    ("missing id", b'{"text": "no id here"}', "missing id"),
    ("5,000-digit integer text", b'{"doc": "p", "text": ' + HUGE + b"}", "Exceeds the limit (4300 digits)"),
    ("5,000-digit integer id", b'{"doc": ' + HUGE + b', "text": "fine"}', "Exceeds the limit (4300 digits)"),
    ("100,000-deep nesting", DEEP, "nested deeper than Python's recursion limit"),
    ("100,000-deep text", b'{"doc": "p", "text": ' + DEEP + b"}", "nested deeper than Python's recursion limit"),
    ("infinite float", b'{"doc": "p", "text": 1e999}', "not text (float)"),
    ("JSON string, not object", b'"just a string"', "line is a JSON str, not an object"),
    ("JSON null, not object", b"null", "line is a JSON NoneType, not an object"),
    ("lone surrogate id", b'{"doc": "\\udc00", "text": "fine"}', "unusable id (lone surrogate"),
]
