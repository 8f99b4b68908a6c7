"""docs/architecture.md cannot go stale silently: every name its tables attribute to a file is defined there, every
class of the three model files is in the side-by-side table, the adapter functions have the documented parameters,
and the layering it draws holds (no module-level import cycle; loading imports modeling, not the reverse)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
FRAMEWORKS = ("torch", "tensorflow", "flax")
ADAPTER = ("check_options", "declare", "assign", "read", "frozen_keys", "replace_vocabulary")
CODE = re.compile(r"`([^`]+)`")


def section(title: str) -> str:
    """The text of the ``## title`` section (up to the next ``## `` heading)."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of ``text``: rows of cells (header first, the ``|---|`` line left out)."""
    found, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def codes(cell: str) -> list[str]:
    return CODE.findall(cell)


@cache
def definitions(path: str) -> dict[str, set[str]]:
    """Module-level names defined in ``path`` (functions, classes, assignments, also inside top-level if/try), each
    with the names its class body defines (empty for non-classes)."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    out: dict[str, set[str]] = {}

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                members: set[str] = set()
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        members.add(item.name)
                    members.update(targets(item))
                out[node.name] = members
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[node.name] = set()
            elif isinstance(node, (ast.If, ast.Try)):
                walk(node.body)
                walk(getattr(node, "orelse", []))
            else:
                for name in targets(node):
                    out[name] = set()

    walk(tree.body)
    return out


def defined(path: str, name: str) -> bool:
    names = definitions(path)
    owner, _, member = name.partition(".")
    return owner in names and (not member or member in names[owner])


def test_owner_table_names_are_defined_in_their_files() -> None:
    (table,) = tables(section("Which file owns which rule"))
    assert table[0] == ["rule", "owner", "names"]
    assert len(table) > 40
    for rule, owner, names in table[1:]:
        (path,) = codes(owner)
        assert (ROOT / path).is_file(), f"{rule}: {path} does not exist"
        assert codes(names), f"{rule}: no names"
        for name in codes(names):
            assert defined(path, name), f"{rule}: {name} is not defined in {path}"


def _file_columns(header: list[str]) -> dict[int, str]:
    return {i: codes(cell)[0] for i, cell in enumerate(header) if codes(cell) and codes(cell)[0].endswith(".py")}


def test_side_by_side_names_are_defined_in_each_model_file() -> None:
    text = section("The three model files side by side")
    model_table, kernel_table = tables(text)
    for table, files in ((model_table, 3), (kernel_table, 2)):
        columns = _file_columns(table[0])
        assert len(columns) == files
        assert len(table) > 5
        for row in table[1:]:
            for i, path in columns.items():
                for name in codes(row[i]):
                    assert defined(path, name), f"{row[0]}: {name} is not defined in {path}"


def test_every_class_of_the_model_files_is_in_the_table() -> None:
    table = tables(section("The three model files side by side"))[0]
    for i, path in _file_columns(table[0]).items():
        listed = {name.partition(".")[0] for row in table[1:] for name in codes(row[i])}
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
        assert classes <= listed, f"{path}: classes missing from docs/architecture.md: {sorted(classes - listed)}"


def test_adapter_functions_have_the_documented_parameters() -> None:
    (table,) = tables(section("The adapter protocol"))
    documented = {codes(row[0])[0]: codes(row[1])[0] for row in table[1:]}
    optional = {codes(row[0])[0] for row in table[1:] if "(optional)" in row[0]}
    assert sorted(set(documented) - optional) == sorted(ADAPTER)
    seen: set[str] = set()
    for framework in FRAMEWORKS:
        tree = ast.parse((ROOT / "distilbert_mf" / framework / "loading.py").read_text(encoding="utf-8"))
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        for name, signature in documented.items():
            if name in optional and name not in functions:
                continue
            assert name in functions, f"{framework}/loading.py has no {name}"
            seen.add(name)
            wanted = ast.parse(f"def {signature.split(' -> ')[0]}: pass").body[0].args
            got = functions[name].args
            assert [a.arg for a in got.args] == [a.arg for a in wanted.args], (framework, name)
            assert [a.arg for a in got.kwonlyargs] == [a.arg for a in wanted.kwonlyargs], (framework, name)
    assert optional <= seen, f"optional adapter functions no adapter defines: {sorted(optional - seen)}"


# ---------------------------------------------------------------------------------------------------- layering


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: top level, inside top-level if/try/with and class bodies, not
    inside functions and not under ``if TYPE_CHECKING``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                walk(node.orelse)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
                for field in ("body", "orelse", "finalbody"):
                    walk(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    walk(handler.body)

    walk(tree.body)
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    """distilbert_mf module -> the distilbert_mf modules its import runs (parent packages that are not its own
    ancestors included: importing ``a.b.c`` runs ``a/b/__init__.py``)."""
    files = {module_name(p): p for p in (ROOT / "distilbert_mf").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)} | {package}
        edges: set[str] = set()
        for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                chain = target.split(".")
                for i in range(1, len(chain) + 1):
                    name = ".".join(chain[:i])
                    if name in files and name not in ancestors and name != module:
                        edges.add(name)
        graph[module] = edges
    return graph


def test_no_module_level_import_cycle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail(f"module-level import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loading_imports_modeling_not_the_reverse(framework: str) -> None:
    graph = import_graph()
    modeling, loading = f"distilbert_mf.{framework}.modeling", f"distilbert_mf.{framework}.loading"
    assert modeling in graph[loading]
    assert loading not in graph[modeling]


def test_bottom_layers_import_nothing_above_them() -> None:
    graph = import_graph()
    assert graph["distilbert_mf.hub"] <= {"distilbert_mf.models"}
    assert not {m for m in graph["distilbert_mf.config"] if m.startswith("distilbert_mf.checkpoint")}
    core = "distilbert_mf.checkpoint.pretrained"
    above = {f"distilbert_mf.{f}" for f in FRAMEWORKS}
    assert not {m for m in graph[core] if m.rpartition(".")[0] in above or m in above}
