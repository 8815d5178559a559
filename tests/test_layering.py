"""The import layering of docs/design.md section 4 and CONTRIBUTING.md ("Where things go"), read from the source.

Every ``import`` in src/gradgeo, at any depth (lazy imports inside functions count), is parsed with ``ast``;
a module may import its own layer and the layers below it, never one above, the channel metrics and the
multi-exit strategies never import each other, and no modules import each other in a circle.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: bottom to top; modules in the same entry are siblings that must not import each other
LAYERS: list[tuple[str, ...]] = [
    ("gradgeo.channel", "gradgeo.multiexit"),
    ("gradgeo.models", "gradgeo.data"),
    ("gradgeo.training",),
    ("gradgeo.tasks",),
    ("gradgeo.experiments",),
    ("gradgeo.cli",),
]
#: the thin public modules over the implementation live in the layer of what they re-export
PUBLIC = {"gradgeo.transforms": "gradgeo.channel", "gradgeo.distributed": "gradgeo.channel",
          "gradgeo.osgd": "gradgeo.multiexit", "gradgeo.segment": "gradgeo.tasks", "gradgeo.gan": "gradgeo.tasks"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each gradgeo module and the gradgeo modules it imports (``from gradgeo.x import y``: ``gradgeo.x.y`` when
    that is a module, else ``gradgeo.x``)."""
    files = {_module_name(p): p for p in sorted((SRC / "gradgeo").rglob("*.py"))}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("gradgeo"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                if base.startswith("gradgeo"):
                    for alias in node.names:
                        candidate = f"{base}.{alias.name}"
                        targets.add(candidate if candidate in files else base)
        edges[name] = {t for t in targets if t != name}
    return edges


def _layer(module: str) -> tuple[int, str] | None:
    """(layer index, the layer's package) of a module; None for the top-level package itself."""
    for public, home in PUBLIC.items():
        if module == public or module.startswith(public + "."):
            module = home
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return index, package
    return None


def test_every_module_has_a_layer():
    unplaced = [m for m in _imports() if m != "gradgeo" and _layer(m) is None]
    assert not unplaced, f"modules outside every layer (add them to a layer folder): {unplaced}"


def test_no_layer_imports_a_higher_one_and_siblings_stay_apart():
    wrong = []
    for module, targets in _imports().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            if here is None or there is None:
                continue  # the top-level package may import any layer
            if there[0] > here[0] or (there[0] == here[0] and there[1] != here[1]):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layering (CONTRIBUTING.md, 'Where things go'):\n" + "\n".join(wrong)


def test_no_import_cycles():
    edges = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("where,source,check,message", [
    ("channel/factory.py", "from gradgeo.experiments import compare_task", "layers", "imports against the layering"),
    ("channel/factory.py", "from gradgeo.multiexit import osgd", "layers", "imports against the layering"),
    ("data/augment.py", "from gradgeo.data import loader", "cycles", "import cycles"),
])
def test_the_checks_catch_a_planted_violation(tmp_path, monkeypatch, where, source, check, message):
    """The rule cannot rot silently: a copy of the source with one bad import planted fails the check."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "gradgeo", copy / "gradgeo")
    target = copy / "gradgeo" / where
    target.write_text(target.read_text() + "\n" + source + "\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", copy)
    test = {"layers": test_no_layer_imports_a_higher_one_and_siblings_stay_apart, "cycles": test_no_import_cycles}
    with pytest.raises(AssertionError, match=message):
        test[check]()


def test_no_source_file_over_500_lines():
    long = {str(p.relative_to(SRC)): n for p in (SRC / "gradgeo").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these files into coherent modules: {long}"


def _docstrings():
    """Every module, class and function docstring under src/gradgeo, with where it is."""
    import ast

    for path in sorted((Path(__file__).resolve().parents[1] / "src" / "gradgeo").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # the module first
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node, clean=False)
                if text:
                    yield f"{path.name}:{getattr(node, 'name', 'module')}", text


def _literal_lines(lines: list[str]) -> list[str]:
    """The lines a page shows as code, as shown: doctest lines, and indented blocks (a line after a blank one, 4
    or more spaces deeper than the text before it, with what follows it at that depth) without that indent."""
    code, depth, text_indent, after_blank = [], None, 0, False
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if not line.strip():
            after_blank = True
            continue
        if depth is not None and indent < depth:
            depth = None
        if depth is None and after_blank and indent >= text_indent + 4:
            depth = indent
        if depth is not None:
            code.append(line[depth:])
        elif line.lstrip().startswith((">>>", "... ")):
            code.append(line.lstrip())
        else:
            text_indent = indent
        after_blank = False
    return code


# the characters of code the site's column shows without scrolling (tests/test_docs_site.py, mkdocs.yml)
CODE_COLUMN = 110


def test_docstrings_render_as_the_api_pages_expect():
    """The API pages render Google-style sections with Markdown: a Returns/Yields entry continued on a line at its
    own indent becomes a second table row (continue it 4 spaces deeper), and reStructuredText's ``::`` shows
    literally (end the line with ``:``; an indented block after a blank line is code anyway). In code (an
    indented block, a doctest) markup shows as written: a Sphinx role became ``<autoref identifier=...>`` there
    and double backticks stay two backticks, so code names things plainly; and a code line fits the column."""
    import inspect
    import re

    problems = []
    for where, text in _docstrings():
        lines = text.split("\n")
        for line in _literal_lines(inspect.cleandoc(text).split("\n")):
            if re.search(r":(?:class|func|meth|mod|attr|data|exc|obj):`|``", line):
                problems.append(f"{where}: markup in code shows literally: {line.strip()!r}")
            if len(line) > CODE_COLUMN:
                problems.append(f"{where}: a code line of {len(line)} characters scrolls on the API page: {line!r}")
        for i, line in enumerate(lines):
            if line.rstrip().endswith("::") and not line.strip().startswith(">>>"):
                problems.append(f"{where}: a line ends in '::': {line.strip()!r}")
            match = re.match(r"^(\s*)(Returns|Yields):\s*$", line)
            if not match:
                continue
            body = []
            for following in lines[i + 1:]:
                if not following.strip() or len(following) - len(following.lstrip()) <= len(match.group(1)):
                    break
                body.append(len(following) - len(following.lstrip()))
            if body and any(indent == body[0] for indent in body[1:]):
                problems.append(f"{where}: {match.group(2)} continues at its first line's indent")
    assert not problems, "\n".join(problems)
