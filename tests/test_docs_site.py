"""What a reader of the documentation site sees, held without building it: inline code keeps its names whole
(docs/inline_code.py, the MkDocs hook that marks where a line may break), the code blocks of the pages fit the
column they are shown in, and an API table has one row per parameter, with its own type and default
(docs/griffe_sphinx_roles.py, the griffe extension of the API reference)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inline_code = _hook("inline_code")


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def _unbreakable(html: str) -> list[str]:
    """The pieces a line may not break inside: each gg-nowrap span, and each plain word between the tags."""
    spans = re.findall(r'<span class="gg-nowrap">([^<]*)</span>', html)
    rest = re.sub(r'<span class="gg-nowrap">[^<]*</span>', " ", html)
    return spans + [word for word in re.split(r"\s+|<[^>]+>", rest) if word]


def test_an_option_or_a_file_in_inline_code_breaks_only_at_its_spaces_and_slashes():
    page = ('<p>Add <code>train --quiet</code> or <code>--strength-range 0.1 10</code>; files land in '
            '<code>DIR/fashion-mnist/*.gz</code> from <code>http://fashion-mnist.example.com/</code>.</p>'
            '<table><tr><td><code>checkpoint.pt</code></td><td><code>&lt;spec&gt;/trial-&lt;k&gt;/</code></td></tr></table>')
    out = inline_code.keep_names_whole(page)
    assert _text(out) == _text(page)  # what a reader copies is unchanged
    pieces = _unbreakable(out)
    for whole in ["--quiet", "--strength-range", "fashion-mnist/", "*.gz", "http://", "fashion-mnist.example.com/",
                  "checkpoint.pt", "trial-&lt;k&gt;/"]:
        assert whole in pieces, (whole, out)
    assert "DIR/<wbr>" in out  # a long path may wrap after a slash


def test_code_blocks_and_code_with_markup_are_left_alone():
    block = '<pre><span></span><code>gradgeo train --quiet --out runs/a-b\n</code></pre>'
    highlighted = '<code class="highlight"><span class="n">f</span>(x-y)</code>'
    assert inline_code.keep_names_whole(block + highlighted) == block + highlighted


def test_the_site_uses_the_hook_and_its_style():
    assert "docs/inline_code.py" in (ROOT / "mkdocs.yml").read_text()
    assert ".gg-nowrap" in (ROOT / "docs" / "stylesheets" / "extra.css").read_text()


# the characters of code a block shows without scrolling: the column is 938 px at a 1280 px window (mkdocs.yml:
# toc.integrate), 8.2 px a character in the theme's code font
CODE_COLUMN = 110


def test_every_line_of_a_code_block_fits_the_column():
    long = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        for block in re.finditer(r"^\s*```[^\n]*\n(.*?)^\s*```", text, re.S | re.M):
            first = text[:block.start(1)].count("\n") + 1
            long += [f"{page.name}:{first + i}: {len(line)} characters" for i, line in
                     enumerate(block[1].splitlines()) if len(line) > CODE_COLUMN]
    assert not long, "code lines hidden behind a scroll bar on the site (continue a shell line with a backslash):\n" \
                     + "\n".join(long)


SEVERAL = '''
import dataclasses


def fit(config, out_dir: str | None = None, *, resume: bool = False, log=print):
    """Train.

    Args:
        config: the run.
        out_dir, resume, log: as in
            :func:`train`.
    """


@dataclasses.dataclass
class Option:
    """An option.

    Attributes:
        default: its default.
        gt, le: bounds (None: no bound).
    """

    default: int
    gt: float | None = None
    le: float | None = None
'''


def test_an_entry_naming_several_parameters_is_one_row_each_with_its_type_and_default():
    griffe = pytest.importorskip("griffe")  # the docs extra
    roles = _hook("griffe_sphinx_roles")
    module = griffe.visit("m", filepath=Path("m.py"), code=SEVERAL, docstring_parser="google")
    roles.SphinxRoles().on_package(pkg=module)
    parameters = {p.name: p for s in module["fit"].docstring.parsed if s.kind.value == "parameters" for p in s.value}
    assert list(parameters) == ["config", "out_dir", "resume", "log"]
    assert (str(parameters["out_dir"].annotation), parameters["out_dir"].value) == ("str | None", "None")
    assert (str(parameters["resume"].annotation), parameters["resume"].value) == ("bool", "False")
    assert parameters["log"].description == parameters["resume"].description
    assert "train" in parameters["log"].description  # the continuation line comes along
    attributes = {a.name: a for s in module["Option"].docstring.parsed if s.kind.value == "attributes" for a in s.value}
    assert list(attributes) == ["default", "gt", "le"]
    assert str(attributes["gt"].annotation) == "float | None"
