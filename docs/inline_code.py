"""MkDocs hook: inline code breaks across lines only where a reader would, never inside a name.

A browser may wrap text after a hyphen and, with the theme's ``word-break: break-word``, anywhere in a word that
overflows; in a table cell that happens whenever the column is narrow. Inline code then reads ``--strength-`` /
``range``, ``--`` / ``quiet`` or ``checkpoi`` / ``nt.pt``: an option or a file name that does not exist. So every
inline ``<code>`` of a page (not a code block) breaks only at its spaces and after a ``/`` (paths and URLs): a run
of characters between those points that holds a ``-`` or a ``?`` (where Chromium breaks inside a word) is wrapped
in ``<span class="gg-nowrap">``, which docs/stylesheets/extra.css keeps on one line, and a ``<wbr>`` follows each
``/``. Other names are kept whole by the stylesheet alone (no break inside a word unless it is wider than the
line). The text is unchanged: what a reader copies is what the page says.
"""

from __future__ import annotations

import re

# an inline code element whose content is plain text (a code block is <pre><code>, skipped as a whole; code with
# markup inside, a highlighted signature or a cross-reference's, holds no hyphenated option or path)
INLINE_CODE = re.compile(r"<code>([^<]*)</code>")
PRE = re.compile(r"(<pre\b.*?</pre>)", re.S)
# a run between break points: no space, and slashes only at its end ("http://" is one run)
RUN = re.compile(r"[^\s/]*/+|[^\s/]+")
BREAKS_INSIDE = re.compile(r"[-?]")


def _keep_whole(run: str) -> str:
    return f'<span class="gg-nowrap">{run}</span>' if BREAKS_INSIDE.search(run) else run


def _code(match: re.Match) -> str:
    pieces = re.split(r"(\s+)", match[1])
    out = []
    for piece in pieces:
        if not piece or piece.isspace():
            out.append(piece)
        else:
            out.append("<wbr>".join(_keep_whole(run) for run in RUN.findall(piece)))
    return f"<code>{''.join(out)}</code>"


def keep_names_whole(html: str) -> str:
    """``html`` with every inline code's runs kept whole (see the module docstring); code blocks untouched."""
    return "".join(part if PRE.fullmatch(part) else INLINE_CODE.sub(_code, part) for part in PRE.split(html))


def on_page_content(html: str, **kwargs: object) -> str:
    return keep_names_whole(html)
