"""Every relative link of the Markdown pages a user reads in a plain clone (README, CONTRIBUTING, docs/, the
results reports) resolves to a file inside the repository: nothing points at the project's sibling folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "results").glob("*.md"))]
# [text](target) and ![alt](target), not inside code spans; the target up to a space, a '#' or the ')'
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s#]*)(?:#[^)\s]*)?(?:\s+\"[^\"]*\")?\)")


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [m["target"] for m in LINK.finditer(text) if m["target"]]


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # not http:, https:, mailto: ...


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(page):
    bad = []
    for target in filter(_relative, _links(page)):
        path = (page.parent / target).resolve()
        if not path.is_relative_to(ROOT.resolve()) or not path.exists():
            bad.append(target)
    assert not bad, f"{page.relative_to(ROOT)}: links that do not resolve in a plain clone: {bad}"


def test_the_link_pattern_finds_links():
    # the check above cannot pass vacuously: the README links to its pages
    assert len(_links(ROOT / "README.md")) >= 5
    assert "docs/design.md" in _links(ROOT / "README.md")
