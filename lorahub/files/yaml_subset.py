"""The part of YAML that tools' own configuration files use, read without PyYAML (not a lorahub dependency).

ComfyUI's ``extra_model_paths.yaml`` is a mapping of sections, each a mapping of folder names to a path or, in a
literal block (``|``), one path a line; InvokeAI's ``invokeai.yaml`` keeps ``models_dir`` as a top-level plain
scalar. This reads exactly that much: block mappings by indentation, plain, single- and double-quoted scalars on one
line, literal block scalars (``|``, ``|-``, ``|+``, with an indentation digit), comments, and a leading ``---``.
Anything else (sequences, flow collections, anchors and aliases, tags, folded ``>`` scalars, values continued on the
next line) is refused with its line number: a file read differently from the tool would be worse than no answer.
Plain scalars stay strings (``true`` and ``1`` too); ``~``, ``null`` and an empty value are None; a key given twice
keeps its last value, as PyYAML does.
"""

from __future__ import annotations

import re

from lorahub import errors

Value = str | None | dict[str, "Value"]

_KEY = re.compile(
    r"""(?P<key>
        "(?:[^"\\]|\\.)*"                         # a double-quoted key,
        | '(?:[^']|'')*'                         # a single-quoted key,
        | [^\s\#'"\-?:,\[\]{}&*!|>%@`][^\#]*?    # or a plain one, not starting as another construct would,
        | -[^\s\#][^\#]*?                         # (a dash followed by a space starts a list)
    )
    \s*:(?:\s+(?P<rest>.*))?$                  # then a colon, and a space or the end of the line
    """,
    re.VERBOSE,
)
_BLOCK_HEADER = re.compile(
    r"^(?P<style>[|>])(?:(?P<chomp>[-+])?(?P<digit>[1-9])?|(?P<digit2>[1-9])(?P<chomp2>[-+]))\s*(?:#.*)?$"
)
_NULLS = frozenset({"~", "null", "Null", "NULL"})
_ESCAPES = {"\\": "\\", '"': '"', "/": "/", "n": "\n", "t": "\t", "r": "\r", "0": "\0", " ": " ", "\t": "\t"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_UNSUPPORTED = {
    "-": "lists (`- item`)",
    "[": "flow lists (`[a, b]`)",
    "{": "flow mappings (`{a: b}`)",
    "&": "anchors (`&name`)",
    "*": "aliases (`*name`)",
    "!": "tags (`!tag`)",
    "?": "complex keys (`? key`)",
    "%": "directives (`%YAML`)",
    "@": "a value starting with `@`",
    "`": "a value starting with a backtick",
}


def parse_mapping(text: str, source: str) -> dict[str, Value]:
    """The file's top-level mapping; an empty file (or one of comments) is an empty mapping."""
    return _Reader(text, source).document()


def top_level_scalar(text: str, key: str, source: str) -> str | None:
    """The plain or quoted scalar of one top-level key, whatever the rest of the file holds; None when absent.

    A top-level key starts in column 0, and nothing else does (a block's lines are indented), so this holds for any
    valid YAML file, including constructs :func:`parse_mapping` refuses.
    """
    reader = _Reader(text, source)
    value: str | None = None
    for number, line in enumerate(reader.lines, 1):
        match = _KEY.match(line)
        if match is None or _unquote_key(match["key"], reader, number) != key:
            continue
        rest = _strip_comment(match["rest"] or "")
        if rest.startswith(("|", ">")):
            raise reader.error(number, f"{key} is a block scalar; write it on one line")
        value = reader.scalar(rest, number) if rest else None
    return value


class _Reader:
    def __init__(self, text: str, source: str) -> None:
        self.lines = text.removeprefix("\ufeff").splitlines()
        self.source = source
        self.index = 0

    def error(self, number: int, message: str) -> errors.ToolConfigError:
        return errors.ToolConfigError(
            f"{self.source}, line {number}: {message}",
            hint="lorahub reads a plain subset of YAML here: `key: value` mappings, quoted values and `|` blocks.",
        )

    def document(self) -> dict[str, Value]:
        first = self._next_content()
        if first is not None and self.lines[first].rstrip() == "---":
            self.index = first + 1
            first = self._next_content()
        if first is None:
            return {}
        indent = self._indent(first)
        if indent:
            raise self.error(first + 1, "the first key is indented")
        mapping = self._mapping(0)
        left = self._next_content()
        if left is not None:
            raise self.error(left + 1, "unexpected line (a document end or a second document)")
        return mapping

    def _next_content(self) -> int | None:
        while self.index < len(self.lines):
            stripped = self.lines[self.index].strip()
            if stripped and not stripped.startswith("#"):
                return self.index
            self.index += 1
        return None

    def _indent(self, index: int) -> int:
        line = self.lines[index]
        width = len(line) - len(line.lstrip(" "))
        if line[width : width + 1] == "\t":
            raise self.error(index + 1, "a tab in the indentation (YAML indents with spaces only)")
        return width

    def _mapping(self, indent: int) -> dict[str, Value]:
        mapping: dict[str, Value] = {}
        while (index := self._next_content()) is not None:
            width = self._indent(index)
            if width < indent:
                break
            number = index + 1
            if width > indent:
                raise self.error(
                    number, "unexpected indentation (a value continued on the next line? use `key: |`, one a line)"
                )
            line = self.lines[index][width:]
            if line.rstrip() in ("---", "..."):
                break
            self._refuse_start(line, number)
            match = _KEY.match(line)
            if match is None:
                raise self.error(number, "expected `key: value`")
            key = _unquote_key(match["key"], self, number)
            self.index = index + 1
            mapping[key] = self._value(match["rest"] or "", width, number)
        return mapping

    def _value(self, rest: str, indent: int, number: int) -> Value:
        rest = _strip_comment(rest)
        if rest.startswith(("|", ">")):
            return self._block(rest, indent, number)
        if rest:
            return self.scalar(rest, number)
        index = self._next_content()
        if index is None:
            return None
        width = self._indent(index)
        if width == indent and self.lines[index][width:].startswith("-"):
            self._refuse_start(self.lines[index][width:], index + 1)
        return self._mapping(width) if width > indent else None

    def _refuse_start(self, text: str, number: int) -> None:
        if text[:1] in _UNSUPPORTED and (text[:1] != "-" or text[1:2] in ("", " ")):
            raise self.error(number, f"{_UNSUPPORTED[text[:1]]} are not read here")

    def scalar(self, text: str, number: int) -> str | None:
        if text[0] in "\"'":
            value, end = _quoted(text, self, number)
            if _strip_comment(text[end:]):
                raise self.error(number, "text after the closing quote")
            return value
        self._refuse_start(text, number)
        if re.search(r":(\s|$)", text):
            raise self.error(number, "`: ` inside a plain value; quote the value")
        return None if text in _NULLS else text

    def _block(self, header: str, indent: int, number: int) -> str:
        match = _BLOCK_HEADER.match(header)
        if match is None:
            raise self.error(number, f"cannot read the block header {header!r}")
        if match["style"] == ">":
            raise self.error(number, "folded blocks (`>`) are not read here; write `|`")
        chomp = match["chomp"] or match["chomp2"] or ""
        digit = match["digit"] or match["digit2"]
        content_indent = indent + int(digit) if digit else None
        lines: list[str] = []
        while self.index < len(self.lines):
            line = self.lines[self.index]
            if not line.strip():
                lines.append(line[content_indent:] if content_indent is not None else "")
                self.index += 1
                continue
            width = len(line) - len(line.lstrip(" "))
            if content_indent is None:
                if width <= indent:
                    break
                content_indent = width
            if width < content_indent:
                break
            lines.append(line[content_indent:])
            self.index += 1
        while lines and not lines[-1].strip() and chomp != "+":
            lines.pop()
        body = "\n".join(lines)
        return body if chomp == "-" or not body else body + "\n"


def _strip_comment(text: str) -> str:
    """The text before a `` #`` comment; quotes are left to the scalar reader (a ``#`` inside them is not one)."""
    if text[:1] in "\"'":
        return text.strip()
    match = re.search(r"(^|\s)#", text)
    return (text[: match.start()] if match else text).strip()


def _unquote_key(key: str, reader: _Reader, number: int) -> str:
    if key[:1] in "\"'":
        return _quoted(key, reader, number)[0]
    return key.strip()


def _quoted(text: str, reader: _Reader, number: int) -> tuple[str, int]:
    """A quoted scalar at the start of ``text``: its value and the index after the closing quote."""
    quote, out, i = text[0], [], 1
    while i < len(text):
        char = text[i]
        if quote == "'" and char == "'":
            if text[i + 1 : i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if quote == '"' and char == '"':
            return "".join(out), i + 1
        if quote == '"' and char == "\\":
            code = text[i + 1 : i + 2]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                i += 2
                continue
            if code in _HEX_ESCAPES:
                digits = text[i + 2 : i + 2 + _HEX_ESCAPES[code]]
                if len(digits) == _HEX_ESCAPES[code] and all(c in "0123456789abcdefABCDEF" for c in digits):
                    out.append(chr(int(digits, 16)))
                    i += 2 + len(digits)
                    continue
            raise reader.error(number, f"the escape \\{code} is not read here")
        out.append(char)
        i += 1
    raise reader.error(number, "a quoted value without its closing quote on the same line")
