"""The package's layers (docs/architecture.md): every module's imports, lazy ones included, go down the
layers only, and no modules import each other in a circle."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinyvae"
# Top to bottom; a module may import its own layer's modules and those of the layers below. rng (the
# random streams' reference, which every layer draws by) and errors are below them all: every layer raises
# its errors, and errors imports nothing of tinyvae.
LAYERS = {
    "face": ["tinyvae"],
    "commands": ["tinyvae.train", "tinyvae.evaluate", "tinyvae.sample", "tinyvae.cli", "tinyvae.__main__",
                 "tinyvae.gradcheck"],
    "training": ["tinyvae.training"],
    "io": ["tinyvae.io"],
    "models": ["tinyvae.models"],
    "nn": ["tinyvae.nn"],
    "backends": ["tinyvae.backends"],
    "rng": ["tinyvae.rng"],
    "errors": ["tinyvae.errors"],
}
RANK = {prefix: len(LAYERS) - i for i, prefixes in enumerate(LAYERS.values()) for prefix in prefixes}
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def rank(module: str) -> int:
    """The layer of ``module``: that of the longest prefix named in :data:`LAYERS`."""
    best = max((p for p in RANK if module == p or module.startswith(p + ".")), key=len)
    return RANK[best]


def imports(module: str) -> set[str]:
    """The tinyvae modules that ``module`` imports anywhere in its file (a function's lazy imports and
    ``TYPE_CHECKING`` ones too); ``from package import name`` counts the submodule where ``name`` is one."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m == "tinyvae" or m.startswith("tinyvae.")}


GRAPH = {m: imports(m) for m in MODULES}


def test_the_layers_cover_every_module():
    assert len(MODULES) > 30 and all(rank(m) for m in MODULES)
    assert all(m in MODULES for m in set().union(*GRAPH.values())), "an import of a module that does not exist"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers_only(module):
    upward = sorted(m for m in GRAPH[module] if rank(m) > rank(module))
    assert not upward, f"{module} (layer {rank(module)}) imports {upward}, a layer above it"


def test_errors_import_nothing_of_tinyvae():
    assert GRAPH["tinyvae.errors"] == set()


def test_no_modules_import_each_other_in_a_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                raise AssertionError(f"an import circle: {' -> '.join(cycle)}")
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def test_the_check_bites_on_a_planted_upward_import(monkeypatch):
    monkeypatch.setitem(GRAPH, "tinyvae.nn.stacks", GRAPH["tinyvae.nn.stacks"] | {"tinyvae.models.config"})
    with pytest.raises(AssertionError, match="a layer above it"):
        test_imports_go_down_the_layers_only("tinyvae.nn.stacks")
    monkeypatch.setitem(GRAPH, "tinyvae.models.config", GRAPH["tinyvae.models.config"] | {"tinyvae.models.vae"})
    with pytest.raises(AssertionError, match="import circle"):
        test_no_modules_import_each_other_in_a_circle()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_longer_than_its_limit(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines; split it by concern"
