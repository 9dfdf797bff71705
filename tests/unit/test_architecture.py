"""Package architecture: no import cycles, config/formats stay light (no torch/transformers at import),
no function over 80 lines. Read from the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "repshift"
MAX_LINES = 80
# Functions over MAX_LINES, each with why it is still long. Shrink this list; never grow it without a reason.
LONG_FUNCTIONS = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _module_level_imports(name: str) -> set[str]:
    """Modules imported at module level (function bodies import lazily on purpose; TYPE_CHECKING is skipped)."""
    out = set()
    package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in TREES[name].body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def import_graph() -> dict[str, set[str]]:
    """repshift module -> the repshift modules it imports at module level (a package's import also
    runs its ``__init__``, so ``from repshift.a.b import c`` depends on repshift.a and repshift.a.b; a module's
    own enclosing packages are already being imported when it runs and are no edge)."""
    graph = {}
    for name in MODULES:
        parts = name.split(".")
        enclosing = {".".join(parts[:i]) for i in range(1, len(parts))}
        deps = set()
        for target in _module_level_imports(name):
            parts = target.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)
        graph[name] = deps - {name} - enclosing
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_repshift_modules():
    graph = import_graph()
    assert "repshift.formats.layout" in graph["repshift.config.targets"]  # the graph sees real imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("package", ["repshift.formats", "repshift.config"])
def test_light_packages_never_import_torch_at_module_level(package):
    graph = import_graph()
    reach, todo = set(), [m for m in MODULES if m == package or m.startswith(package + ".")]
    while todo:  # everything these modules pull in when imported, repshift modules followed
        m = todo.pop()
        if m not in reach:
            reach.add(m)
            todo += graph[m]
    heavy = {
        f"{m} imports {t}"
        for m in reach
        for t in _module_level_imports(m)
        if t.split(".")[0] in {"torch", "transformers", "sae_lens"}
    }
    assert not heavy, sorted(heavy)


def test_no_function_over_80_lines():
    long = {}
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long[f"{name}.{node.name}"] = n
    new = {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    assert not new, f"functions over {MAX_LINES} lines (split them): {new}"
    fixed = sorted(set(LONG_FUNCTIONS) - set(long))
    assert not fixed, f"now short: remove from LONG_FUNCTIONS: {fixed}"


def test_importing_config_and_formats_loads_no_torch():
    import subprocess
    import sys

    mods = [m for m in MODULES if m.startswith(("repshift.formats", "repshift.config"))]
    code = f"import sys\nfor m in {mods!r}: __import__(m)\nprint(sorted({{'torch', 'transformers'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


MAX_STEP_LINES = 30
# @step functions over MAX_STEP_LINES, each with why. Steps are entry points: read inputs, call the subpackage's
# tested library code, write outputs; move logic out rather than growing this list.
LONG_STEPS = {}


def _is_step(node) -> bool:
    return any(getattr(d, "id", None) == "step" for d in node.decorator_list)


def test_every_step_is_a_thin_entry_point():
    sizes = {
        f"{name}.{node.name}": node.end_lineno - node.lineno + 1
        for name, tree in TREES.items()
        if name.endswith(".steps")
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and _is_step(node)
    }
    assert "repshift.models.steps.extract_activations" in sizes, "the scan sees no step (decorator renamed?)"
    long = {k: n for k, n in sizes.items() if n > MAX_STEP_LINES}
    new = {k: v for k, v in long.items() if k not in LONG_STEPS}
    assert not new, f"@step functions over {MAX_STEP_LINES} lines (move the logic into the subpackage): {new}"
    fixed = sorted(set(LONG_STEPS) - set(long))
    assert not fixed, f"now thin: remove from LONG_STEPS: {fixed}"
