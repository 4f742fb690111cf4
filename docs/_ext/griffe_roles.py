"""A Griffe extension: turn the Sphinx roles in trioweb's docstrings into Markdown.

The package's docstrings use ``:class:`~trioweb.App```-style roles (they read well in an
editor); mkdocstrings renders Markdown. A role naming a public object by its full path becomes
a cross-reference to its entry in the API reference; any other becomes inline code.

Attributes are documented the Sphinx way too, with ``#:`` comments on the lines above them
(``#: Why there is a gap, in words.``): Griffe does not read those, so this extension makes
them the attributes' docstrings.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|mod):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<!`)``([^`]+)``(?!`)")

#: Paths the API reference renders, so a cross-reference to them always resolves.
DOCUMENTED = ("trioweb.", "trioweb.testing.", "trioweb.broadcast.", "trioweb.rooms.")


def _replace(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    name = target.rsplit(".", 1)[-1] if short else target
    module, _, attr = target.rpartition(".")
    if module and f"{module}." in DOCUMENTED and "." not in attr:
        return f"[`{name}`][{target}]"
    return f"`{name}`"


def convert(text: str) -> str:
    """``text`` with every Sphinx role replaced by Markdown."""
    # ``literal`` (reST) is `literal` in Markdown.
    return _LITERAL.sub(r"`\1`", _ROLE.sub(_replace, text))


def comment_above(obj: griffe.Object) -> str | None:
    """The ``#:`` comment on the lines right above ``obj``'s definition, if any."""
    if obj.lineno is None:
        return None
    try:
        lines = obj.lines_collection[obj.filepath]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    found: list[str] = []
    index = obj.lineno - 2  # the line above, 0-based
    while index >= 0 and lines[index].strip().startswith("#:"):
        found.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return " ".join(found) or None


class SphinxRoles(griffe.Extension):
    """Rewrite docstrings as they are loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_attribute:
            comment = comment_above(obj)
            if comment is not None:
                obj.docstring = griffe.Docstring(comment, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
