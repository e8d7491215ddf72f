"""The JSON the API accepts (DESIGN §6): DRF's parser, stricter where Python's `json` is lenient.

- A key given twice in one object is refused, naming the key: `json` would keep the last one silently,
  so the game and this server could disagree about what was sent.
- Nesting is bounded (`MAX_DEPTH`): no request of ours needs more than a few levels, and a body nested
  100,000 deep would otherwise exhaust the parser's recursion (a RecursionError, a 500).
- NaN and Infinity are refused, as DRF does (`STRICT_JSON`), and so is a number too large for a float
  (1e400), which Python would read as infinity.
"""

import codecs
import math

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json

# Levels of arrays and objects, the body itself being level 1. An ingest batch uses 3
# (body → list of items → an item's list of approaches).
MAX_DEPTH = 32


class DuplicateKey(ValueError):
    def __init__(self, key: str):
        # repr() escapes control characters and unpaired surrogates, so the key can be quoted back.
        shown = key if len(key) <= 100 else key[:99] + "…"
        super().__init__(f"the key {shown!r} appears twice in one object; give each key once.")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range.")
    return value


def _deeper_than(value: object, limit: int) -> bool:
    """Whether `value` nests arrays and objects more than `limit` levels deep (iterative: the check
    itself must not recurse)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class StrictJSONParser(JSONParser):
    max_depth = MAX_DEPTH

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        too_deep = ParseError(f"JSON parse error - nested more than {self.max_depth} levels deep.")
        try:
            data = json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=json.strict_constant if self.strict else None,
                parse_float=_finite_float if self.strict else None,
                object_pairs_hook=_unique_keys,
            )
        except RecursionError:
            raise too_deep from None
        except ValueError as exc:  # also DuplicateKey, and bytes that are not text in `encoding`
            raise ParseError(f"JSON parse error - {exc}") from None
        if isinstance(data, dict | list) and _deeper_than(data, self.max_depth):
            raise too_deep
        return data
