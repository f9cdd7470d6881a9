"""The package layout keeps its promises: no import cycle, every subpackage says what it is."""

from __future__ import annotations

import ast
from pathlib import Path

import attrcore

PACKAGE = Path(attrcore.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports() -> dict[str, set[str]]:
    """attrcore module → the attrcore modules it imports at module level (not inside
    functions, not under TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "attrcore":
                    continue
                deps.add(target)
                for alias in node.names:  # `from . import x` imports the module x
                    sub = f"{target}.{alias.name}"
                    if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists():
                        deps.add(sub)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "attrcore"}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_between_library_modules():
    graph = module_level_imports()
    assert "attrcore.engine.train" in graph and "attrcore.methods.registry" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_detector_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_subpackage_opens_with_a_docstring_naming_its_parts():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) >= 3, f"{init.parent.name}/__init__.py needs a docstring"


def uncommented_function_imports(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every import inside a function or method that does not say why it
    is there: a comment on its line, on the first line of the run of imports it belongs to,
    or on the line just above that run."""
    lines = source.splitlines()
    found = []

    def commented(node) -> bool:
        if any("#" in line for line in lines[node.lineno - 1 : node.end_lineno]):
            return True
        j = node.lineno - 1  # up to the first line of this run of imports
        while j > 0 and lines[j - 1].strip().startswith(("from ", "import ")):
            j -= 1
        return "#" in lines[j] or (j > 0 and lines[j - 1].strip().startswith("#"))

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)) and not commented(child):
                found.append((child.lineno, lines[child.lineno - 1].strip()))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    return found


def test_function_level_imports_only_for_optional_heavy_dependencies_with_a_comment():
    """Imports live at the top of a module; one inside a function is an optional heavy
    dependency (traker, dattri, cleanlab, Dask, scikit-learn's loaders, ...) or a real cycle,
    and its comment says which."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        bad += [
            f"{path.relative_to(PACKAGE.parent)}:{n}: {text}"
            for n, text in uncommented_function_imports(path.read_text(encoding="utf-8"))
        ]
    assert not bad, "hoist these imports to the module top, or comment why they must stay local:\n" + "\n".join(bad)


def test_the_import_checker_tells_commented_from_uncommented():
    source = (
        "import os\n"
        "def f():\n"
        "    from .a import b\n"
        "    import heavy  # optional heavy dependency\n"
        "    # dattri: only when DVEmb is used\n"
        "    from dattri import x\n"
        "    from dattri.task import y\n"
        "class C:\n"
        "    def g(self):\n"
        "        import json\n"
    )
    assert uncommented_function_imports(source) == [(3, "from .a import b"), (10, "import json")]
