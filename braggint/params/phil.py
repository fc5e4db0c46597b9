"""A parser and model for the PHIL parameter language used by DIALS.

Supported: nested scopes (``name { ... }``), definitions (``name = value``),
attributes (``.type``, ``.help``, ``.multiple``, ``.expert_level`` and any
other ``.name = value``), help strings continued over several quoted lines,
``#`` comments, and the types ``str``, ``path``, ``bool``, ``int``,
``float`` (with ``value_min``, ``value_max``, ``allow_none``), ``ints``,
``floats`` (with ``size``), ``choice`` (``*`` marks the default) and
``reflection_table_selector``.  ``None`` and ``Auto`` are accepted as values
of numeric parameters, as in DIALS.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from ..errors import ParameterError


class _AutoType:
    """The ``Auto`` value: 'let the program decide' (e.g. ``nproc=Auto``)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Auto"

    def __reduce__(self):
        return (_AutoType, ())


Auto = _AutoType()


# --------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------
@dataclass
class PhilType:
    """A parsed ``.type`` attribute, e.g. ``float(value_min=0, allow_none=True)``."""

    name: str
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "PhilType":
        match = re.fullmatch(r"\s*([A-Za-z_][\w]*)\s*(?:\((.*)\))?\s*", text)
        if match is None:
            raise ParameterError(f"cannot understand .type = {text}")
        options = {}
        for item in filter(None, (s.strip() for s in (match.group(2) or "").split(","))):
            key, _, value = item.partition("=")
            options[key.strip()] = _literal(value.strip())
        return cls(match.group(1), options)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.options.items())})"


def _literal(text: str):
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text.strip("'\"")


# --------------------------------------------------------------------------
# Tree
# --------------------------------------------------------------------------
class _Node:
    """What definitions and scopes share: a dotted path and inherited attributes."""

    name: str
    attributes: dict
    parent: "Scope | None"

    @property
    def path(self) -> str:
        prefix = self.parent.path if self.parent is not None else ""
        return f"{prefix}.{self.name}" if prefix else self.name

    @property
    def multiple(self) -> bool:
        return bool(self.attributes.get("multiple", False))

    @property
    def expert_level(self) -> int:
        own = int(self.attributes.get("expert_level", 0) or 0)
        return max(own, self.parent.expert_level if self.parent is not None else 0)

    @property
    def help(self) -> str:
        return str(self.attributes.get("help", ""))


@dataclass(eq=False)
class Definition(_Node):
    """A parameter: ``name = value`` with its attributes.

    ``words`` is the raw value text; ``value`` the converted Python value
    (for ``.multiple`` definitions a list of values).
    """

    name: str
    words: str
    attributes: dict = field(default_factory=dict)
    parent: "Scope | None" = None
    value: object = None

    @property
    def type(self) -> PhilType:
        return PhilType.parse(str(self.attributes.get("type", "str")))

    def choices(self) -> list[str]:
        return [w.lstrip("*") for w in _split_words(self.words)]

    def copy(self, parent: "Scope | None") -> "Definition":
        value = list(self.value) if isinstance(self.value, list) else self.value
        return Definition(self.name, self.words, dict(self.attributes), parent, value)


@dataclass(eq=False)
class Scope(_Node):
    """A named group of definitions and scopes (the root has an empty name)."""

    name: str = ""
    children: list = field(default_factory=list)
    attributes: dict = field(default_factory=dict)
    parent: "Scope | None" = None

    def definitions(self):
        """All definitions below this scope, depth first, in file order."""
        for child in self.children:
            if isinstance(child, Definition):
                yield child
            else:
                yield from child.definitions()

    def child(self, name: str):
        for child in self.children:
            if child.name == name:
                return child
        return None

    def copy(self, parent: "Scope | None" = None) -> "Scope":
        new = Scope(self.name, [], dict(self.attributes), parent)
        new.children = [c.copy(new) for c in self.children]
        return new


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------
class _Scanner:
    """Character scanner over PHIL source that tracks line numbers."""

    def __init__(self, text: str, source: str):
        self.text = text
        self.pos = 0
        self.source = source

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def error(self, message: str) -> ParameterError:
        return ParameterError(f"{self.source}, line {self.line}: {message}")

    def skip_space(self, newlines: bool = True) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif ch in " \t\r;" or (newlines and ch == "\n"):
                self.pos += 1
            else:
                break

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def word(self) -> str:
        match = re.compile(r"[^\s={}#;]+").match(self.text, self.pos)
        if match is None:
            raise self.error(f"expected a name, found {self.peek()!r}")
        self.pos = match.end()
        return match.group(0)

    def value(self) -> str:
        """Raw text up to the end of the line, an unquoted ``}`` or ``#``."""
        start = self.pos
        quote = None
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if quote:
                if ch == "\\":
                    self.pos += 1
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch in "\n}#;":
                break
            self.pos += 1
        if quote:
            raise self.error("unterminated quoted string")
        return self.text[start:self.pos].strip()

    def continuation(self) -> str | None:
        """A following line that starts with a quote continues the value."""
        save = self.pos
        self.skip_space()
        if self.peek() in "\"'":
            return self.value()
        self.pos = save
        return None


def parse(text: str, source: str = "<string>") -> Scope:
    """Parse PHIL text into a tree; raise :class:`ParameterError` with file and line on failure."""
    scanner = _Scanner(text, source)
    root = Scope()
    _parse_body(scanner, root, top=True)
    return root


def _parse_body(scanner: _Scanner, scope: Scope, top: bool) -> None:
    while True:
        scanner.skip_space()
        ch = scanner.peek()
        if ch == "":
            if not top:
                raise scanner.error(f"scope '{scope.path}' is not closed with '}}'")
            return
        if ch == "}":
            if top:
                raise scanner.error("unexpected '}'")
            scanner.pos += 1
            return
        name = scanner.word()
        if name.startswith("."):
            raise scanner.error(f"attribute {name} does not follow a parameter or scope")
        scanner.skip_space(newlines=False)
        if scanner.peek() == "=":
            scanner.pos += 1
            scanner.skip_space(newlines=False)
            definition = Definition(name, scanner.value())
            definition.attributes = _parse_attributes(scanner)
            _insert(scope, name, definition)
        else:
            attributes = _parse_attributes(scanner)
            scanner.skip_space()
            if scanner.peek() != "{":
                raise scanner.error(f"expected '=' or '{{' after '{name}'")
            scanner.pos += 1
            child = Scope(name.split(".")[-1], [], attributes)
            parent = _insert(scope, name, child)
            _parse_body(scanner, child, top=False)
            child.parent = parent


def _insert(scope: Scope, dotted: str, node) -> Scope:
    """Insert a node at a dotted name below ``scope``, creating scopes on the way."""
    parts = dotted.split(".")
    for part in parts[:-1]:
        existing = scope.child(part)
        if not isinstance(existing, Scope):
            existing = Scope(part, [], {}, scope)
            scope.children.append(existing)
        scope = existing
    node.name = parts[-1]
    node.parent = scope
    scope.children.append(node)
    return scope


def _parse_attributes(scanner: _Scanner) -> dict:
    attributes = {}
    while True:
        save = scanner.pos
        scanner.skip_space()
        if scanner.peek() != ".":
            scanner.pos = save
            return attributes
        name = scanner.word()[1:]
        scanner.skip_space(newlines=False)
        if scanner.peek() == "=":
            scanner.pos += 1
            scanner.skip_space(newlines=False)
            raw = scanner.value()
        else:
            raw = "True"
        if name == "help":
            parts = [raw]
            while (more := scanner.continuation()) is not None:
                parts.append(more)
            attributes[name] = "".join(_unquote(p) for p in parts)
        else:
            value = _literal(raw) if name in ("multiple", "expert_level", "optional") else raw
            attributes[name] = value


def _unquote(text: str) -> str:
    words = _split_words(text)
    return "".join(words) if words else ""


def _split_words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()
