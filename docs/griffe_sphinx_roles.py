"""A griffe extension for the API reference: render the Sphinx roles of gradgeo's docstrings.

The docstrings are Google style with Sphinx cross-reference roles (``:class:`ChannelDirected```,
``:func:`~gradgeo.experiments.compare_task```, ``:mod:`gradgeo.transforms```). Markdown knows no roles, so each
becomes an optional cross-reference of mkdocs-autorefs around the name in code font: a link where the target is
documented on one of the pages, plain code where it is not (a private module, a torch name). A name without
dots is resolved in the scope of the docstring's object, as Python would; ``~`` shows only the last part.

It also reads an ``Example:`` section as griffe's ``Examples:``, so that its ``>>>`` lines render as code, and
gives an entry that documents several names at once (``mean, std: ...`` under ``Args:`` or ``Attributes:``) one
row per name, each with the entry's description: griffe would read it as one parameter ``mean, std`` with no
type and shown as required whatever its default, or as an attribute ``gt,`` of type ``ge, lt, le``; one row a
name gets each its own type and default from the signature.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

EXAMPLE_HEADING = re.compile(r"^Example:$", re.M)
ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?`")
NAMED_SECTION = re.compile(r"^(?P<indent> *)(?:Args|Arguments|Parameters|Params|Attributes|Other Parameters|"
                           r"Keyword Args|Keyword Arguments):\s*$")
SEVERAL_NAMES = re.compile(r"^(?P<indent> *)(?P<names>\**\w+(?: *, *\**\w+)+)(?P<rest>(?: *\([^)]*\))?:.*)$")


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


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def one_entry_per_name(text: str) -> str:
    """``text`` with each ``a, b: description`` entry of a section that names things written as one entry a name
    (the description, with its continuation lines, repeated)."""
    lines, out, i = text.split("\n"), [], 0
    section = None  # the indent of the section header we are in
    while i < len(lines):
        line = lines[i]
        if NAMED_SECTION.match(line):
            section = _indent(line)
        elif line.strip() and section is not None and _indent(line) <= section:
            section = None
        several = SEVERAL_NAMES.match(line) if section is not None else None
        if not several or _indent(line) <= section:
            out.append(line)
            i += 1
            continue
        entry_end = i + 1
        while entry_end < len(lines) and lines[entry_end].strip() and _indent(lines[entry_end]) > _indent(line):
            entry_end += 1
        for name in re.split(r" *, *", several["names"]):
            out.append(f"{several['indent']}{name}{several['rest']}")
            out.extend(lines[i + 1:entry_end])
        i = entry_end
    return "\n".join(out)


def _convert(obj: griffe.Object, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if obj.docstring is not None:
        text = ROLE.sub(lambda m: _render(obj, m), obj.docstring.value)
        obj.docstring.value = one_entry_per_name(EXAMPLE_HEADING.sub("Examples:", text))
    for member in obj.members.values():
        if not member.is_alias:
            _convert(member, seen)


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the loaded package (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _convert(pkg, set())
