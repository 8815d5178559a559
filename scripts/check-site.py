"""Check the built documentation site the way a reader opens it: from disk (``open site/index.html``).

Every relative ``href`` and ``src`` of every page must name a file that exists (a link to a folder shows a file
listing from disk, not a page), and no link may start at the server root (it breaks from disk and under a
sub-path). ``404.html`` too: a reader may open it from disk, and a server shows it under any sub-path (its
script then points its links at the site's root folder, docs_theme/404.html). Prints each broken link and exits
1 if there is one.

    python scripts/check-site.py site
"""

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


def broken_links(site: Path) -> list[str]:
    problems = []
    for page in sorted(site.rglob("*.html")):
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
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


if __name__ == "__main__":
    site = Path(sys.argv[1] if len(sys.argv) > 1 else "site")
    if not (site / "index.html").is_file():
        sys.exit(f"{site} holds no built site (index.html); run make docs first")
    found = broken_links(site)
    print("\n".join(found) or f"check-site: every link of {len(list(site.rglob('*.html')))} pages resolves from disk")
    sys.exit(1 if found else 0)
