"""The package's import structure: no import loop, and imports only go down the layers.

Every ``import`` statement in ``src/lossreg`` counts, function-local ones included
(a lazy import still makes the lower module depend on the higher one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lossreg"

#: Lowest first. A module may import its own layer's modules and any lower layer, never a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "_io", "_limits", "_autoimport", "_registry"),
    ("ops",),
    ("losses", "assigners", "balancers", "necks", "data"),
    ("heads",),
    ("detectors",),
    ("recipe",),
    ("hub",),
    ("_factory", "_docs"),
    ("engine", "export", "convert"),
    ("cli", "__main__", "__init__"),
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """``lossreg.*`` modules that ``path`` imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lossreg")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lossreg":
                continue
            out.add(target)
            for alias in node.names:  # `from . import x` may name a submodule
                cand = f"{target}.{alias.name}"
                if (SRC.parent / cand.replace(".", "/")).with_suffix(".py").exists() or (
                    SRC.parent / cand.replace(".", "/") / "__init__.py"
                ).exists():
                    out.add(cand)
    out.discard(module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {m: {t for t in _imports(p) if t in modules} for m, p in modules.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    top = _top(module)
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer of LAYERS; add it")


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _layer(module)


def test_imports_only_go_down() -> None:
    upward = sorted(
        f"{src} imports {dst}"
        for src, targets in _graph().items()
        for dst in targets
        if _layer(dst) > _layer(src)
    )
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if node not in colour and (found := visit(node)):
            return found
    return None


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # A package's __init__ re-exporting its submodules, which import siblings through the
    # package, is Python's normal layout, not a loop between modules.
    out = {}
    for src, targets in graph.items():
        out[src] = {t for t in targets if not src.startswith(t + ".")}
    return out


def test_no_import_loop() -> None:
    cycle = _cycle(_without_package_inits(_graph()))
    assert cycle is None, "import loop: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_cycle_finder_finds_loops(graph, expected) -> None:
    assert _cycle(graph) == expected
