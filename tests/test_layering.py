"""The layering rules, read from the source: every import, also those inside functions, counts."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vae", "sweeps")
PLATFORM_ONLY = ("ray", "optuna", "streamlit")
APP_PACKAGE = "sweeps.app"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path) -> set[str]:
    """Absolute dotted names imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            # `from pkg import mod` names a module; `from mod import func` names the module itself.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def top_level(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_vae_imports_neither_the_platform_nor_its_libraries():
    for name, path in project_modules().items():
        if name.split(".")[0] != "vae":
            continue
        bad = top_level(imported_names(path)) & {*PLATFORM_ONLY, "sweeps"}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_streamlit_only_in_the_app():
    users = [name for name, path in project_modules().items()
             if "streamlit" in top_level(imported_names(path))]
    assert users, "the listening app imports streamlit somewhere"
    outside = [name for name in users if not name.startswith(APP_PACKAGE)]
    assert not outside, f"streamlit imported outside {APP_PACKAGE}: {outside}"


def test_no_project_file_is_a_grab_bag():
    long_files = [f"{path.relative_to(ROOT)}: {n} lines" for path in project_modules().values()
                  if (n := len(path.read_text().splitlines())) > 320]
    assert not long_files, long_files
