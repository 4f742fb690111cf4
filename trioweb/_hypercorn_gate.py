"""The version gate of every change trioweb makes to hypercorn (docs/hypercorn.md).

Each change was read and tested against certain hypercorn releases (its ``VERIFIED_VERSIONS``)
and checks, before it is applied, that the code it replaces still has the shape it was written
for (its ``_shape_problem()``). :func:`gate` decides from both, the same way for every change:

- the shape has changed: not applied, and a warning says what is then left unprotected;
- the shape is as expected but the release was not verified: applied, and a warning asks
  someone to check whether this hypercorn still needs it;
- a verified release: applied, silently.
"""

from __future__ import annotations

import importlib.metadata
import logging

__all__ = ["code_names", "gate"]


def code_names(function: object) -> set[str]:
    """The global and attribute names ``function``'s code uses (empty if it has no code)."""
    return set(getattr(getattr(function, "__code__", None), "co_names", ()))


def gate(
    logger: logging.Logger,
    change: str,
    verified: frozenset[str],
    problem: str | None,
    *,
    not_applied: str,
    unprotected: str,
    module: str,
) -> bool:
    """Whether to apply ``change`` (a name such as "trioweb's HTTP/2 guard") to the installed
    hypercorn, given the releases it was ``verified`` with and its shape ``problem`` (None when
    the code it replaces looks as expected). ``not_applied`` and ``unprotected`` word the warning
    when it is not applied (what is not done, and what that leaves); ``module`` is where the
    change lives, for the warning that asks for a check."""
    version = importlib.metadata.version("hypercorn")
    if problem is not None:
        logger.warning("hypercorn %s: %s (%s); %s", version, not_applied, problem, unprotected)
        return False
    if version not in verified:
        logger.warning(
            "hypercorn %s is not a version %s was verified with (%s); applying it since the "
            "code it replaces has the expected shape. Check whether this hypercorn still needs "
            "it (%s)",
            version,
            change,
            ", ".join(sorted(verified)),
            module,
        )
    return True
