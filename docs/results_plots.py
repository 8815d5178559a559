"""MkDocs hook: the plots of ``results/`` on the site, linked from the pages as they are in the repository.

A page links a plot as ``../results/<stage>/<plot>.png``, which resolves in a clone and on a code host; the site
gets each ``results/*/*.png`` as ``results/<stage>/<plot>.png`` and the links of the pages at the docs root are
pointed there, so the plots are shown from disk and when served, with no copy of them under docs/.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

RESULTS = Path(__file__).resolve().parents[1] / "results"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for plot in sorted(RESULTS.glob("*/*.png")):
        files.append(File.generated(config, f"results/{plot.parent.name}/{plot.name}", abs_src_path=str(plot)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if "/" in page.file.src_uri:  # only the pages at the docs root link ../results/ to the repository's results
        return markdown
    return markdown.replace("](../results/", "](results/")
