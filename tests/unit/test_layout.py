"""The package layout: stage packages whose imports run one way, and thin tools."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "detector"
TOOLS = PACKAGE.parent / "tools"

# Lowest first: a unit may import units ranked below it (and itself), never one ranked at or above it.
RANK = {
    "errors": 0,
    "config": 1,
    "checkpoint": 1,
    "cli": 1,
    "data": 2,
    "backbones": 2,
    "ssd": 3,
    "inference": 4,  # the runner interface: evaluation and training run models through it
    "build": 5,
    "weights": 6,
    "evaluation": 7,
    "training": 8,
    "deploy": 9,
    "app": 10,
    "paper": 11,
}


def _unit(module: str) -> str:
    """detector.data.dataset -> data; detector.build -> build."""
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("detector."):
            found.add(_unit(node.module))
        elif isinstance(node, ast.ImportFrom) and node.module == "detector":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(_unit(a.name) for a in node.names if a.name.startswith("detector."))
    return found


def test_the_top_level_shows_the_stages():
    entries = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir() and p.name != "__pycache__"}
    assert entries - {"__init__"} == set(RANK)
    modules = [p for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    assert len(modules) <= 5


def test_imports_run_one_way():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if unit == "__init__":
            continue
        for imported in _imports(path):
            if imported != unit and RANK[imported] >= RANK[unit]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports detector.{imported}")
    assert not wrong, "\n".join(wrong)


def test_tools_are_thin():
    long = {p.name: n for p in TOOLS.glob("*.py") if (n := len(p.read_text().splitlines())) > 150}
    assert not long, long


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("detector"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
                edges.update(t for t in targets if t in modules and t != "detector")
        graph[name] = edges - {name}
    visiting, done = set(), set()

    def visit(node: str, trail: list[str]) -> None:
        assert node not in visiting, "import cycle: " + " -> ".join([*trail, node])
        if node in done:
            return
        visiting.add(node)
        for nxt in graph[node]:
            visit(nxt, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for name in graph:
        visit(name, [])
