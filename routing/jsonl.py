"""JSON Lines, read safely: every reader of a `.jsonl` file in tierflow goes through here.

Pure: the standard library only; the caller opens the file (in binary mode). Lines
end at `\\n` alone, so U+2028, U+2029 and U+0085 inside a string are text, as JSON
says, never a line break (`str.splitlines()` would split on them). A line is one
JSON value within bounds that the rest of the system can store and hash: nested at
most `MAX_DEPTH` deep, integers of at most `MAX_INT_DIGITS` digits, finite numbers
only (no `NaN`, `Infinity`, `1e999`), no lone UTF-16 surrogate, no byte order mark.

A bad line becomes an `InputError` naming the source, the line and the field
(`metadata.budget_usd`), never echoing the line's content.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from tierflow.routing.errors import InputError

MAX_DEPTH = 64
MAX_INT_DIGITS = 64
MAX_LINE_BYTES = 16 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
LINE = "<line>"
_JSON_SPACE = b" \t\r\n"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class Record:
    """One JSON value, the line it was on (1-based) and the line's length in bytes."""

    line: int
    value: Any
    size: int = 0


class JsonValueError(ValueError):
    """A line that is JSON but out of bounds, or not JSON; `field` is where, `reason` what."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class _Refused(Exception):
    """Raised by the decoder's hooks to stop at the first value out of bounds."""


class _Marker:
    """What a refused value decodes to when the field holding it is looked for."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _refuse_constant(name: str) -> Any:
    raise _Refused


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS and len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused
    return int(text)


def _mark_constant(name: str) -> _Marker:
    return _Marker(f"{name} is not a JSON number")


def _mark_float(text: str) -> float | _Marker:
    value = float(text)
    return value if math.isfinite(value) else _Marker("number out of range (not finite)")


def _mark_int(text: str) -> int | _Marker:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Marker(f"integer of {digits} digits; at most {MAX_INT_DIGITS}")
    return int(text)


_FAST = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
_MARKING = json.JSONDecoder(parse_constant=_mark_constant, parse_float=_mark_float, parse_int=_mark_int)


def loads(text: str) -> Any:
    """One JSON value within the bounds above; JsonValueError names the field that is out."""
    marked = False
    try:
        try:
            value = _FAST.decode(text)
        except _Refused:  # a number out of bounds: decode again, marking it, to say where it is
            value, marked = _MARKING.decode(text), True
    except RecursionError:
        raise JsonValueError(deep_field(text), f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise JsonValueError(LINE, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if marked or text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        _check(value)
    if marked:
        raise JsonValueError(LINE, "a number out of bounds")  # _check found it; kept for safety
    return value


def _check(value: Any) -> None:
    """Walk the value once: depth, marked numbers, lone surrogates in keys and strings."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise JsonValueError(field_name(path), f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, _Marker):
            raise JsonValueError(field_name(path), node.reason)
        if isinstance(node, str):
            if _lone_surrogate(node):
                raise JsonValueError(field_name(path), "lone UTF-16 surrogate (\\ud800-\\udfff) in a string")
        elif isinstance(node, dict):
            for key, item in node.items():
                if _lone_surrogate(key):
                    raise JsonValueError(field_name(path), "lone UTF-16 surrogate in a key")
                stack.append((item, (*path, key)))
        elif isinstance(node, list):
            stack.extend((item, (*path, str(index))) for index, item in enumerate(node))


def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def field_name(path: tuple[str, ...] | list[str]) -> str:
    """A dotted field path fit for a one-line error: at most 4 parts, odd keys JSON-quoted."""
    if not path:
        return LINE
    shown = [_part(part) for part in path[:4]]
    return ".".join(shown) + ("..." if len(path) > 4 else "")


def _part(key: str) -> str:
    if key and len(key) <= 40 and key.isascii() and key.isprintable() and "." not in key:
        return key
    quoted = json.dumps(key)  # ASCII-only: no line break or surrogate reaches the terminal
    return quoted if len(quoted) <= 42 else quoted[:40] + '..."'


def deep_field(text: str) -> str:
    """The path to where `text` nests deeper than MAX_DEPTH, found by scanning, not parsing."""
    open_: list[list[Any]] = []  # per open container: [is_object, key or index of the current child]
    pending = ""
    index = 0
    while index < len(text) and len(open_) <= MAX_DEPTH:
        char = text[index]
        if char == '"':
            string = _STRING.match(text, index)
            if string is None:
                break
            pending, index = string.group()[1:-1], string.end()
            continue
        if char == ":" and open_ and open_[-1][0]:
            open_[-1][1] = pending
        elif char == "," and open_ and not open_[-1][0]:
            open_[-1][1] += 1
        elif char in "{[":
            open_.append([char == "{", "" if char == "{" else 0])
        elif char in "}]" and open_:
            open_.pop()
        index += 1
    return field_name([str(part) for _, part in open_[:-1]])


def read_records(
    stream: IO[bytes], source: str, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Record | InputError]:
    """Every non-blank line of a binary stream: its Record, or the InputError that refuses it.

    Reads one line at a time and never holds more than `max_line_bytes` of it: memory
    does not grow with the file. The caller decides whether one bad line stops it.
    """
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            _skip_rest_of_line(stream)
            yield InputError(source, number, LINE, f"longer than {max_line_bytes} bytes")
            continue
        item = _record(raw, number, source)
        if item is not None:
            yield item


def _record(raw: bytes, number: int, source: str) -> Record | InputError | None:
    if raw.startswith(BOM):
        return InputError(source, number, LINE, "starts with a byte order mark (U+FEFF): save it without one")
    if not raw.strip(_JSON_SPACE):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputError(source, number, LINE, f"not UTF-8 text (byte {exc.start + 1} of the line)")
    try:
        return Record(number, loads(text), len(raw))
    except JsonValueError as exc:
        return InputError(source, number, exc.field, exc.reason)


def _skip_rest_of_line(stream: IO[bytes]) -> None:
    while True:
        chunk = stream.readline(_SKIP_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return


def strict_records(stream: IO[bytes], source: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Record]:
    """Like read_records, but the first bad line raises its InputError."""
    for item in read_records(stream, source, max_line_bytes):
        if isinstance(item, InputError):
            raise item
        yield item
