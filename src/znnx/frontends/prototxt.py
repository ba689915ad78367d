"""A small parser for protobuf text format, as Caffe's .prototxt files use it.

No schema: a message is a list of fields, each a scalar token or a nested message, with the line
it came from. Typed accessors convert on demand and report the line of any bad value. Every
failure raises PrototxtError, a ModelError, and never anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from znnx.errors import ModelError

_TOKEN = re.compile(
    r"""(?P<space>[ \t\r\f\v]+)|(?P<newline>\n)|(?P<comment>\#[^\n]*)
      |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      |(?P<punct>[{}\[\]:,;<>])|(?P<word>[A-Za-z0-9_.+\-]+)""",
    re.VERBOSE,
)
_INT = re.compile(r"[+-]?(0x[0-9a-fA-F]+|\d+)$")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)[fF]?$", re.IGNORECASE)
_CLOSE = {"{": "}", "<": ">"}


class PrototxtError(ModelError):
    """A prototxt file that is not valid text format, or a field with a value of the wrong kind."""


@dataclass(frozen=True)
class Scalar:
    text: str
    quoted: bool
    line: int


@dataclass(frozen=True)
class Field:
    key: str
    value: Scalar | Message
    line: int


@dataclass(frozen=True)
class Message:
    fields: tuple[Field, ...]
    line: int
    source: str = "<prototxt>"

    def all(self, key: str) -> list[Field]:
        return [f for f in self.fields if f.key == key]

    def has(self, key: str) -> bool:
        return any(f.key == key for f in self.fields)

    def _scalars(self, key: str) -> list[Scalar]:
        values = []
        for f in self.all(key):
            if not isinstance(f.value, Scalar):
                raise PrototxtError(f"{self.source}:{f.line}: field {key!r} must be a value, got a {{...}} block")
            values.append(f.value)
        return values

    def _one(self, key: str) -> Scalar | None:
        values = self._scalars(key)
        return values[-1] if values else None

    def ints(self, key: str) -> list[int]:
        return [_int(self.source, key, s) for s in self._scalars(key)]

    def floats(self, key: str) -> list[float]:
        return [_float(self.source, key, s) for s in self._scalars(key)]

    def get_int(self, key: str, default: int) -> int:
        value = self._one(key)
        return default if value is None else _int(self.source, key, value)

    def get_float(self, key: str, default: float) -> float:
        value = self._one(key)
        return default if value is None else _float(self.source, key, value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._one(key)
        if value is None:
            return default
        if value.text in ("true", "True", "t", "1"):
            return True
        if value.text in ("false", "False", "f", "0"):
            return False
        raise PrototxtError(f"{self.source}:{value.line}: field {key!r} expects true or false, got {value.text!r}")

    def get_str(self, key: str, default: str = "") -> str:
        value = self._one(key)
        return default if value is None else value.text

    def strs(self, key: str) -> list[str]:
        return [s.text for s in self._scalars(key)]

    def messages(self, key: str) -> list[Message]:
        found = []
        for f in self.all(key):
            if not isinstance(f.value, Message):
                raise PrototxtError(f"{self.source}:{f.line}: field {key!r} must be a {{...}} block, got "
                                    f"{f.value.text!r}")
            found.append(f.value)
        return found

    def message(self, key: str) -> Message:
        """The last block named `key`, or an empty message where there is none."""
        found = self.messages(key)
        return found[-1] if found else Message((), self.line, self.source)


def _int(source: str, key: str, scalar: Scalar) -> int:
    if scalar.quoted or not _INT.match(scalar.text):
        raise PrototxtError(f"{source}:{scalar.line}: field {key!r} expects an integer, got {scalar.text!r}")
    return int(scalar.text, 0) if "x" in scalar.text.lower() else int(scalar.text)


def _float(source: str, key: str, scalar: Scalar) -> float:
    if scalar.quoted or not _FLOAT.match(scalar.text):
        raise PrototxtError(f"{source}:{scalar.line}: field {key!r} expects a number, got {scalar.text!r}")
    text = scalar.text.lower()
    return float(text[:-1] if text.endswith("f") and not text.endswith("inf") else text)


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _tokens(text: str, source: str) -> Iterator[tuple[str, str, int]]:
    line, position = 1, 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PrototxtError(f"{source}:{line}: unexpected character {text[position]!r}")
        position = match.end()
        kind = match.lastgroup
        if kind == "newline":
            line += 1
        elif kind in ("string", "punct", "word"):
            yield str(kind), match.group(), line


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.tokens = list(_tokens(text, source))
        self.index = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            last = self.tokens[-1][2] if self.tokens else 1
            raise PrototxtError(f"{self.source}:{last}: unexpected end of file (unbalanced braces?)")
        self.index += 1
        return token

    def message(self, close: str | None, line: int) -> Message:
        fields: list[Field] = []
        while True:
            token = self.peek()
            if token is None:
                if close is not None:
                    raise PrototxtError(f"{self.source}:{line}: block opened here is never closed with {close!r} "
                                        f"(unbalanced braces)")
                return Message(tuple(fields), line, self.source)
            kind, text, at = token
            if kind == "punct" and text == close:
                self.index += 1
                return Message(tuple(fields), line, self.source)
            if kind == "punct" and text in ";,":
                self.index += 1
                continue
            if kind != "word" or not re.match(r"[A-Za-z_]\w*$", text):
                raise PrototxtError(f"{self.source}:{at}: expected a field name, got {text!r}"
                                    + (" (unbalanced braces?)" if text in "}>" else ""))
            self.index += 1
            fields.extend(self.field(text, at))

    def field(self, key: str, line: int) -> list[Field]:
        kind, text, at = self.take()
        if kind == "punct" and text == ":":
            kind, text, at = self.take()
            if kind == "punct" and text == "[":
                return [Field(key, value, at) for value in self.items()]
        if kind == "punct" and text in _CLOSE:
            return [Field(key, self.message(_CLOSE[text], at), line)]
        if kind == "punct":
            raise PrototxtError(f"{self.source}:{at}: field {key!r} expects a value or a block, got {text!r}")
        return [Field(key, Scalar(_unquote(text) if kind == "string" else text, kind == "string", at), line)]

    def items(self) -> list[Scalar | Message]:
        values: list[Scalar | Message] = []
        while True:
            kind, text, at = self.take()
            if kind == "punct" and text == "]":
                return values
            if kind == "punct" and text == ",":
                continue
            if kind == "punct" and text in _CLOSE:
                values.append(self.message(_CLOSE[text], at))
            elif kind == "punct":
                raise PrototxtError(f"{self.source}:{at}: unexpected {text!r} in a [...] list")
            else:
                values.append(Scalar(_unquote(text) if kind == "string" else text, kind == "string", at))


def parse(text: str, source: str = "<prototxt>") -> Message:
    """Parse protobuf text format; raises PrototxtError with the line of the first problem."""
    return _Parser(text, source).message(None, 1)
