"""Item search of CJA's ``GET /reports/topItems``: ``search-clause`` and the term lists.

The spec's grammar (its topItems description): single-quoted terms joined by ``AND``, ``OR``,
``NOT`` and parentheses, e.g. ``'test' AND NOT ('test1' OR 'test2')``; a term matches an item
whose value contains it. ``searchAnd``/``searchOr``/``searchNot`` take space-delimited terms,
``searchPhrase`` one phrase; every parameter given must hold. Matching is case-insensitive (as
Workspace's search is; the spec does not say) and applies to the value shown, so ``Unspecified``
for the none item.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from emulator import errors

Match = Callable[[str], bool]
SEARCH_PARAMS = ("search-clause", "searchAnd", "searchOr", "searchNot", "searchPhrase")
_TOKEN = re.compile(r"\s*(?:(\()|(\))|'((?:[^'\\]|\\.)*)'|\b(AND|OR|NOT)\b)", re.IGNORECASE)


def _bad(description: str) -> errors.AdobeHTTPError:
    return errors.cja(400, "invalid_parameters", description)


def _contains(term: str) -> Match:
    needle = term.casefold()
    return lambda value: needle in value.casefold()


class _Clause:
    """Recursive descent over the tokens: OR of ANDs of (NOT)* atoms."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text.rstrip()):
            found = _TOKEN.match(text, position)
            if found is None:
                raise self._error("a quoted term, AND, OR, NOT or a parenthesis", position)
            kind = next(i for i, g in enumerate(found.groups()) if g is not None)
            value = found.group(kind + 1)
            start = found.start(kind + 1) - (kind == 2)
            self.tokens.append((("(", ")", "term", "op")[kind], value, start))
            position = found.end()
        self.at = 0

    def _error(self, expected: str, position: int) -> errors.AdobeHTTPError:
        return _bad(
            f"search-clause {self.text!r}: expected {expected} at position {position} "
            "(the spec's form: 'test' AND NOT ('test1' OR 'test2'))"
        )

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _is(self, op: str) -> bool:
        token = self._peek()
        return token is not None and token[0] == "op" and token[1].upper() == op

    def parse(self) -> Match:
        match = self._or()
        token = self._peek()
        if token is not None:
            raise self._error("AND, OR or the end", token[2])
        return match

    def _or(self) -> Match:
        parts = self._joined("OR", self._and)
        return parts[0] if len(parts) == 1 else lambda v: any(p(v) for p in parts)

    def _and(self) -> Match:
        parts = self._joined("AND", self._not)
        return parts[0] if len(parts) == 1 else lambda v: all(p(v) for p in parts)

    def _joined(self, op: str, operand: Callable[[], Match]) -> list[Match]:
        parts = [operand()]
        while self._is(op):
            self.at += 1
            parts.append(operand())
        return parts

    def _not(self) -> Match:
        if self._is("NOT"):
            self.at += 1
            inner = self._not()
            return lambda v: not inner(v)
        return self._atom()

    def _atom(self) -> Match:
        token = self._peek()
        if token is None:
            raise self._error("a quoted term or '('", len(self.text))
        kind, value, position = token
        self.at += 1
        if kind == "term":
            return _contains(re.sub(r"\\(.)", r"\1", value))
        if kind == "(":
            inner = self._or()
            closing = self._peek()
            if closing is None or closing[0] != ")":
                raise self._error("')'", closing[2] if closing else len(self.text))
            self.at += 1
            return inner
        raise self._error("a quoted term or '('", position)


def parse_clause(text: str) -> Match:
    """A ``search-clause`` as a predicate on an item's value; 400 naming the position."""
    return _Clause(text).parse()


def item_search(params: Mapping[str, str]) -> Match | None:
    """The predicate of every search parameter given (all must hold), or None when none is."""
    parts: list[Match] = []
    if params.get("search-clause"):
        parts.append(parse_clause(params["search-clause"]))
    terms = {name: params.get(name, "").split() for name in ("searchAnd", "searchOr", "searchNot")}
    if terms["searchAnd"]:
        wanted = [_contains(t) for t in terms["searchAnd"]]
        parts.append(lambda v: all(m(v) for m in wanted))
    if terms["searchOr"]:
        either = [_contains(t) for t in terms["searchOr"]]
        parts.append(lambda v: any(m(v) for m in either))
    if terms["searchNot"]:
        unwanted = [_contains(t) for t in terms["searchNot"]]
        parts.append(lambda v: not any(m(v) for m in unwanted))
    if params.get("searchPhrase", "").strip():
        parts.append(_contains(params["searchPhrase"].strip()))
    if not parts:
        return None
    return lambda value: all(p(value) for p in parts)
