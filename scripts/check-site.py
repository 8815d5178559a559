"""Check the built documentation site the way a reader opens it: from disk (``open site/index.html``).

Every relative ``href`` and ``src`` of every page must name a file that exists (a link to a folder shows a file
listing from disk, not a page), and no link may start at the server root (it breaks from disk and under a sub-
path). ``404.html`` too: a reader may open it from disk, and a server shows it under any sub-path (its script then
points its links at the site's root folder, docs_theme/404.html). Everything a page loads by itself (scripts,
stylesheets, fonts, images) is the site's own (one from the network fails offline), and the search works from disk:
its index is also a script (``search/search_index.js``, mkdocs.yml's offline plugin). No page shows markup meant
for the API reference's renderer as text (a Sphinx role, or the cross-reference it becomes, inside code). Prints
each problem and exits 1 if there is one.

    python scripts/check-site.py site
"""

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.fetched: list[str] = []  # what the browser loads by itself: scripts, stylesheets, fonts, images

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)
                if tag in ("script", "link", "img") and (tag != "link" or dict(attrs).get("rel") != "canonical"):
                    self.fetched.append(value)


def broken_links(site: Path) -> list[str]:
    problems = []
    if not (site / "search" / "search_index.js").is_file():
        problems.append("search/search_index.js is missing: the search does not work from disk (the offline plugin)")
    for page in sorted(site.rglob("*.html")):
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        problems += [f"{page.relative_to(site)}: {src!r} comes from the network (fails offline)"
                     for src in parser.fetched if urlsplit(src).scheme or src.startswith("//")]
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("#", "mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if parts.path.startswith("/"):
                problems.append(f"{page.relative_to(site)}: {link!r} is absolute "
                                "(breaks from disk and under a sub-path)")
            elif target.is_dir():
                problems.append(f"{page.relative_to(site)}: {link!r} is a folder (a file listing from disk)")
            elif not target.exists():
                problems.append(f"{page.relative_to(site)}: {link!r} does not exist")
    return problems


# a Sphinx role as text, or docs/griffe_sphinx_roles.py's cross-reference escaped into text (inside code)
LITERAL_MARKUP = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`|&lt;autoref\b")


def literal_markup(site: Path) -> list[str]:
    return [f"{page.relative_to(site)}: shows markup as text: {match[0]!r}" for page in sorted(site.rglob("*.html"))
            for match in LITERAL_MARKUP.finditer(page.read_text(encoding="utf-8"))]


if __name__ == "__main__":
    site = Path(sys.argv[1] if len(sys.argv) > 1 else "site")
    if not (site / "index.html").is_file():
        sys.exit(f"{site} holds no built site (index.html); run make docs first")
    found = broken_links(site) + literal_markup(site)
    print("\n".join(found) or f"check-site: every link of {len(list(site.rglob('*.html')))} pages resolves from disk, "
          "nothing loads from the network, the search index loads from disk, no markup shows as text")
    sys.exit(1 if found else 0)
