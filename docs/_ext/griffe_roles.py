"""A Griffe extension: turn the Sphinx roles in trioweb's docstrings into Markdown.

The package's docstrings use ``:class:`~trioweb.App```-style roles (they read well in an
editor); mkdocstrings renders Markdown. A role naming a public object by its full path becomes
a cross-reference to its entry in the API reference; any other becomes inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|mod):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<!`)``([^`]+)``(?!`)")

#: Paths the API reference renders, so a cross-reference to them always resolves.
DOCUMENTED = ("trioweb.", "trioweb.testing.", "trioweb.broadcast.")


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


class SphinxRoles(griffe.Extension):
    """Rewrite docstrings as they are loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
