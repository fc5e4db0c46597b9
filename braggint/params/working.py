"""Working parameters: a master PHIL tree plus the user's assignments.

Names given by the user may be any unambiguous trailing part of a full
parameter path (``nproc=4`` sets ``integration.mp.nproc``), as in DIALS.
"""

from __future__ import annotations

import difflib
from types import SimpleNamespace

from ..errors import ParameterError
from .convert import convert, format_value
from .phil import Definition, Scope, parse


class Params(SimpleNamespace):
    """Extracted parameters with attribute access (``params.integration.mp.nproc``)."""


def _multiple_ancestor(node) -> Scope | None:
    scope = node.parent
    while scope is not None:
        if scope.multiple:
            return scope
        scope = scope.parent
    return None


def _relative_path(node, ancestor: Scope) -> list[str]:
    parts = []
    while node is not ancestor:
        parts.append(node.name)
        node = node.parent
    return parts[::-1]


def _walk(scope: Scope, parts: list[str]):
    node = scope
    for part in parts:
        node = node.child(part)
    return node


class ParameterSet:
    """The master tree with current values.

    Definitions hold their converted ``value`` and a ``modified`` flag;
    ``.multiple`` scopes keep their master as a template and the user's
    instances in :attr:`instances`.
    """

    def __init__(self, master: Scope):
        self.tree = master.copy()
        self.instances: dict[str, list[Scope]] = {}
        for scope in self._scopes(self.tree):
            if scope.multiple:
                self.instances[scope.path] = []
        for definition in self.tree.definitions():
            self._set_default(definition)
        self._definitions = {d.path: d for d in self.tree.definitions()}

    @classmethod
    def from_text(cls, text: str, source: str) -> "ParameterSet":
        return cls(parse(text, source))

    # ----- helpers ------------------------------------------------------
    @staticmethod
    def _scopes(scope: Scope):
        yield scope
        for child in scope.children:
            if isinstance(child, Scope):
                yield from ParameterSet._scopes(child)

    @staticmethod
    def _set_default(definition: Definition) -> None:
        value = convert(definition, definition.words)
        if definition.multiple:
            value = [] if value is None else [value]
        definition.value = value
        definition.modified = False

    def resolve(self, name: str) -> Definition:
        """The master definition a (possibly abbreviated) name refers to."""
        if name in self._definitions:
            return self._definitions[name]
        matches = [d for path, d in self._definitions.items() if path.endswith("." + name)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            leaves = {path.rsplit(".", 1)[-1]: path for path in self._definitions}
            close = difflib.get_close_matches(name.rsplit(".", 1)[-1], list(leaves), n=1, cutoff=0.7)
            suggestion = f" (did you mean {leaves[close[0]]}?)" if close else ""
            raise ParameterError(f"unknown parameter '{name}'{suggestion}")
        raise ParameterError(
            f"ambiguous parameter '{name}' matches {', '.join(d.path for d in matches)}")

    def _target(self, template: Definition, instance: Scope | None) -> Definition:
        ancestor = _multiple_ancestor(template)
        if ancestor is None:
            return template
        instances = self.instances[ancestor.path]
        if instance is None:
            if not instances:
                instances.append(self._new_instance(ancestor))
            instance = instances[0]
        return _walk(instance, _relative_path(template, ancestor))

    def _new_instance(self, template: Scope) -> Scope:
        instance = template.copy(template.parent)
        for definition in instance.definitions():
            self._set_default(definition)
        return instance

    # ----- assignment ---------------------------------------------------
    def assign(self, name: str, words: str, instance: Scope | None = None) -> Definition:
        """Set a parameter from its text value; returns the master definition."""
        template = self.resolve(name)
        target = self._target(template, instance)
        value = convert(template, words)
        if target.multiple:
            if not target.modified:
                target.value = []
            if value is not None:
                target.value.append(value)
        else:
            target.value = value
        target.modified = True
        return template

    def apply_phil(self, text: str, source: str) -> None:
        """Apply the assignments of a PHIL text (a user's ``.phil`` file)."""
        self._apply_scope(parse(text, source), prefix="", instance=None)

    def _apply_scope(self, scope: Scope, prefix: str, instance: Scope | None) -> None:
        for child in scope.children:
            path = f"{prefix}.{child.name}" if prefix else child.name
            if isinstance(child, Definition):
                self.assign(path, child.words, instance)
                continue
            multiple = self._multiple_scope(path)
            if multiple is not None and instance is None:
                new = self._new_instance(multiple)
                self.instances[multiple.path].append(new)
                self._apply_scope(child, multiple.path, new)
            else:
                self._apply_scope(child, path, instance)

    def _multiple_scope(self, path: str) -> Scope | None:
        for scope in self._scopes(self.tree):
            if scope.multiple and (scope.path == path or scope.path.endswith("." + path)):
                return scope
        return None

    # ----- reading ------------------------------------------------------
    def value(self, name: str):
        return self.resolve(name).value

    def extract(self) -> Params:
        return self._extract(self.tree)

    def _extract(self, scope: Scope) -> Params:
        out = Params()
        for child in scope.children:
            if isinstance(child, Definition):
                setattr(out, child.name, child.value)
            elif child.multiple:
                setattr(out, child.name, [self._extract(i) for i in self.instances[child.path]])
            else:
                setattr(out, child.name, self._extract(child))
        return out

    # ----- formatting ---------------------------------------------------
    def show(self, expert_level: int = 0, attributes_level: int = 0) -> str:
        """The whole tree with current values, as ``-c`` prints it."""
        lines: list[str] = []
        self._format(self.tree, lines, 0, expert_level, attributes_level, only_modified=False)
        return "\n".join(lines) + "\n"

    def diff(self) -> str:
        """Only the parameters that differ from the defaults (DIALS's ``.phil`` output)."""
        lines: list[str] = []
        self._format(self.tree, lines, 0, 99, 0, only_modified=True)
        return "\n".join(lines) + ("\n" if lines else "")

    def _format(self, scope, lines, depth, expert_level, attributes_level, only_modified) -> bool:
        pad = "  " * depth
        wrote = False
        for child in scope.children:
            if child.expert_level > expert_level:
                continue
            if isinstance(child, Definition):
                if only_modified and not self._differs(child):
                    continue
                for text in self._definition_lines(child):
                    lines.append(f"{pad}{child.name} = {text}")
                    if attributes_level:
                        lines.extend(self._attribute_lines(child, pad + "  ", attributes_level))
                wrote = True
                continue
            # A .multiple scope shows its instances; -c shows the template when there are none.
            bodies = [child]
            if child.multiple:
                bodies = self.instances[child.path] or ([] if only_modified else [child])
            for body in bodies:
                sub: list[str] = []
                if self._format(body, sub, depth + 1, expert_level, attributes_level, only_modified):
                    lines.append(f"{pad}{child.name}" + " {")
                    if attributes_level and child.help:
                        lines.append(f"{pad}  # {child.help}")
                    lines.extend(sub)
                    lines.append(pad + "}")
                    wrote = True
        return wrote

    @staticmethod
    def _differs(definition: Definition) -> bool:
        if not definition.modified:
            return False
        default = convert(definition, definition.words)
        if definition.multiple:
            return definition.value != ([] if default is None else [default])
        return definition.value != default or type(definition.value) is not type(default)

    @staticmethod
    def _definition_lines(definition: Definition) -> list[str]:
        if definition.multiple:
            values = definition.value or [None]
            return [format_value(definition, v) for v in values]
        if not definition.modified:
            return [definition.words]
        return [format_value(definition, definition.value)]

    @staticmethod
    def _attribute_lines(definition: Definition, pad: str, level: int) -> list[str]:
        out = []
        if definition.help:
            out.append(f'{pad}.help = "{definition.help}"')
        if level >= 2:
            out.append(f"{pad}.type = {definition.attributes.get('type', 'str')}")
            for key, value in definition.attributes.items():
                if key not in ("help", "type"):
                    out.append(f"{pad}.{key} = {value}")
        return out
