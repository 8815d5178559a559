"""Every code example of the documentation runs: the ``>>>`` examples in the docstrings of ``src/gradgeo``
(doctest) and the ```` ```python ```` blocks of ``README.md`` and ``docs/*.md``.

An example that cannot run here (it needs torchrun, a GPU or a long training run) is marked, ``# doctest:
+SKIP`` in a docstring or a ``<!-- not-run: REASON -->`` line right before a block, and listed with its reason
in ``docs/examples.md``; the last tests check that the marked set and that list are the same. Blocks run one by
one, each in a fresh namespace and a fresh working folder (``runs/...`` lands there); docstring examples see
their module's names plus ``torch``, ``nn`` and ``F``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradgeo

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES_PAGE = ROOT / "docs" / "examples.md"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

NOT_RUN = "<!-- not-run:"
BLOCK = re.compile(r"^(?:<!-- not-run: (?P<reason>[^\n]+?) -->\n)?```python\n(?P<code>.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int
    code: str
    reason: str | None  # why it is not run, or None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def markdown_blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code"))  # the line of the ```python fence
            blocks.append(Block(str(page.relative_to(ROOT)), line, match["code"], match["reason"]))
        # a marker that is not right before a block would silently mark nothing
        markers = len(re.findall(rf"^{NOT_RUN}", text, re.M))
        assert markers == sum(b.reason is not None for b in blocks if b.page == str(page.relative_to(ROOT))), (
            f"{page.name}: a '{NOT_RUN} ... -->' line must stand right before a ```python block")
    return blocks


def gradgeo_modules() -> list:
    names = [info.name for info in pkgutil.walk_packages(gradgeo.__path__, "gradgeo.")
             if not info.name.endswith(".__main__")]  # running it is the command line itself
    return [gradgeo, *(importlib.import_module(name) for name in sorted(names))]


def docstring_examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for module in gradgeo_modules():
        for test in finder.find(module, module.__name__, extraglobs={"torch": torch, "nn": nn, "F": F}):
            found.setdefault(test.name, test)  # a name re-exported by a package is found once
    return sorted(found.values(), key=lambda test: test.name)


BLOCKS = markdown_blocks()
DOCTESTS = docstring_examples()


def skipped(test: doctest.DocTest) -> bool:
    return any(example.options.get(doctest.SKIP) for example in test.examples)


def needs_data(source: str) -> bool:
    return "load_dataset(" in source or "fashion-mnist" in source or "gradgeo.cli" in source


@pytest.fixture
def in_tmp_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADGEO_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    yield tmp_path
    # accelerate keeps process-wide state: the next Accelerator (or Trainer) must start fresh
    import sys
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.reason is None], ids=lambda b: b.id)
def test_markdown_example_runs(block, in_tmp_folder):
    if needs_data(block.code) and not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    for module in ("lightning", "accelerate", "transformers"):
        if re.search(rf"^(import|from) {module}\b", block.code, re.M):
            pytest.importorskip(module)
    code = compile(block.code, f"{block.page}:{block.line}", "exec")
    exec(code, {"__name__": "__doc_example__"})


@pytest.mark.parametrize("test", [t for t in DOCTESTS if not all(e.options.get(doctest.SKIP) for e in t.examples)],
                         ids=lambda t: t.name)
def test_docstring_example_runs(test, in_tmp_folder):
    source = "".join(example.source for example in test.examples)
    if needs_data(source) and not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    test.globs = dict(test.globs)  # each run starts from the module's names
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


def test_the_main_public_names_have_a_runnable_example():
    """A transform, ChannelDirected, create_optimizer, gram_schmidt and backward, a strategy and a model builder
    each show a docstring example that runs."""
    runnable = {t.name for t in DOCTESTS if not all(e.options.get(doctest.SKIP) for e in t.examples)}
    for name in ("gradgeo.channel.transforms.reweighted_h0", "gradgeo.channel.transforms.sobolev",
                 "gradgeo.channel.transforms.h1", "gradgeo.channel.transforms.laplacian_smooth",
                 "gradgeo.channel.optim.ChannelDirected", "gradgeo.channel.factory.create_optimizer",
                 "gradgeo.multiexit.osgd.gram_schmidt", "gradgeo.multiexit.osgd.backward",
                 "gradgeo.multiexit.strategies.OSGD", "gradgeo.multiexit.strategies.make_strategy",
                 "gradgeo.models.build_model", "gradgeo.models.anytime.build_anytime_model"):
        assert name in runnable, f"{name} has no runnable docstring example"


# --- the marked examples and their list in docs/examples.md --------------------------------------------------


def listed(section: str) -> list[tuple[str, str]]:
    """The rows ``| `where` | reason |`` of the table under the heading ``section`` of docs/examples.md."""
    text = EXAMPLES_PAGE.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    rows = []
    for line in text[start:end if end >= 0 else None].splitlines():
        match = re.fullmatch(r"\| `([^`]+)` \| (.+?) \|", line.strip())
        if match:
            rows.append((match[1], match[2]))
    return rows


def test_markdown_blocks_that_do_not_run_are_the_listed_ones():
    marked = sorted((b.page, b.reason) for b in BLOCKS if b.reason is not None)
    rows = sorted(listed("Documentation pages"))
    assert marked == rows, (f"marked but not listed: {[m for m in marked if m not in rows]}; "
                            f"listed but not marked: {[r for r in rows if r not in marked]}")


def test_docstring_examples_that_do_not_run_are_the_listed_ones():
    marked = {t.name for t in DOCTESTS if skipped(t)}
    rows = dict(listed("Docstrings"))
    assert marked == set(rows), (f"skipped but not listed: {sorted(marked - set(rows))}; "
                                 f"listed but not skipped: {sorted(set(rows) - marked)}")


def test_the_examples_found_are_many():
    """The collection itself works: a pattern that silently matched nothing would pass everything."""
    assert len([b for b in BLOCKS if b.reason is None]) >= 15
    assert len([t for t in DOCTESTS if not skipped(t)]) >= 30
