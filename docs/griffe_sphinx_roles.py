"""A griffe extension for the API reference: render the Sphinx roles of gradgeo's docstrings.

The docstrings are Google style with Sphinx cross-reference roles (``:class:`ChannelDirected```,
``:func:`~gradgeo.experiments.compare_task```, ``:mod:`gradgeo.transforms```). Markdown knows no roles, so each
becomes an optional cross-reference of mkdocs-autorefs around the name in code font: a link where the target is
documented on one of the pages, plain code where it is not (a private module, a torch name). A name without
dots is resolved in the scope of the docstring's object, as Python would; ``~`` shows only the last part.

It also reads an ``Example:`` section as griffe's ``Examples:``, so that its ``>>>`` lines render as code.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

EXAMPLE_HEADING = re.compile(r"^Example:$", re.M)
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?`")


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names in the scope of ``obj``, or None."""
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            scope = scope.parent
            continue
        return f"{path}.{rest}" if rest else path
    return None


def _render(obj: griffe.Object, match: re.Match) -> str:
    target = match["target"]
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    if target.startswith(("gradgeo.", "torch.")) or target == "gradgeo":
        path = target
    else:
        path = _resolve(obj, target) or target
    return f'<autoref identifier="{html.escape(path)}" optional><code>{html.escape(shown)}</code></autoref>'


def _convert(obj: griffe.Object, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if obj.docstring is not None:
        text = ROLE.sub(lambda m: _render(obj, m), obj.docstring.value)
        obj.docstring.value = EXAMPLE_HEADING.sub("Examples:", text)
    for member in obj.members.values():
        if not member.is_alias:
            _convert(member, seen)


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the loaded package (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _convert(pkg, set())
