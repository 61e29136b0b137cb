"""The code's layers read one way (DEVELOPERS.md "Architecture"): no import cycle between modules, and
no package importing one above it.

Every ``import``/``from … import`` counts, also those inside functions (a cycle hidden in a function is
still a cycle) and under ``if TYPE_CHECKING:`` (a type-only back reference still couples the two files).
``python tests/test_layers.py`` prints the package graph and every cycle.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each project package and the project packages it may import, lowest layer first. Third-party rules
# (bpy, torch) are in FORBIDDEN. DEVELOPERS.md's architecture table says the same (checked below).
LAYERS: dict[str, set[str]] = {
    "facemodel": set(),
    "runtime": {"facemodel"},
    "synth": {"facemodel"},
    "learner": {"facemodel", "runtime", "synth"},
    "evaluation": {"facemodel", "runtime", "synth"},
    "bootstrap": {"facemodel", "runtime", "synth", "learner", "evaluation"},
    "blender_addon": {"facemodel", "runtime"},
    "facerig_cli": {"facemodel", "runtime", "synth", "learner", "evaluation", "bootstrap", "blender_addon"},
}
# Third-party modules a package must never import, not even lazily.
FORBIDDEN: dict[str, set[str]] = {
    "facemodel": {"bpy", "torch"},
    "runtime": {"bpy", "torch"},
    "blender_addon": {"torch"},
    "evaluation": {"torch"},
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the project packages (a package is its ``__init__``)."""
    mods = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import statement in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, [alias.name for alias in node.names]))
    return out


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module → project modules it imports, project module → top-level third-party modules).

    ``from pkg import sub`` is an edge to ``pkg.sub`` when that is a module, else to ``pkg`` itself;
    ``import a.b.c`` is an edge to the deepest project module named. A submodule's implicit import of
    its own parent package is not an edge (Python runs the parent's ``__init__`` first, always)."""
    mods = project_modules(root)
    edges: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for module, names in _imports(path, name):
            targets = []
            if names:
                subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in mods]
                targets += subs
                if len(subs) < len(names):
                    targets.append(module)
            else:
                targets.append(module)
            for target in targets:
                while target and target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods:
                    if target != name and not name.startswith(target + "."):
                        edges[name].add(target)
                elif target:
                    external[name].add(target.split(".")[0])
    return dict(edges), dict(external)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every two-module cycle, then one shortest cycle through each other group of modules that import
    each other in a ring (strongly connected components, Tarjan; the cycle by breadth-first search)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    out = sorted([a, b, a] for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    for group in groups:
        members, start = set(group), group[0]
        if any(set(c) <= members for c in out):
            continue
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(edges.get(v, ())):
                if w == start:
                    out.append(paths[v] + [start])
                    queue = []
                    break
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return out


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            if a.split(".")[0] != b.split(".")[0]:
                out[a.split(".")[0]].add(b.split(".")[0])
    return dict(out)


def test_no_import_cycles() -> None:
    edges, _ = import_graph()
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" → ".join(c) for c in found)


def test_imports_follow_the_layers() -> None:
    edges, _ = import_graph()
    against = sorted(f"{a} imports {b}" for a, targets in edges.items() for b in targets
                     if b.split(".")[0] != a.split(".")[0] and b.split(".")[0] not in LAYERS[a.split(".")[0]])
    assert not against, "imports against the layer order (tests/test_layers.py LAYERS):\n" + "\n".join(against)


def test_forbidden_third_party_imports() -> None:
    _, external = import_graph()
    bad = sorted(f"{m} imports {x}" for m, xs in external.items() for x in xs
                 if x in FORBIDDEN.get(m.split(".")[0], set()))
    assert not bad, "\n".join(bad)


def test_developers_guide_states_the_same_layers() -> None:
    """The "may import" column of DEVELOPERS.md's architecture table names exactly the project packages
    :data:`LAYERS` allows."""
    text = (ROOT / "DEVELOPERS.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)/` \| ([^|]*) \|", text, re.M)}
    assert set(rows) == set(LAYERS), f"DEVELOPERS.md's table lists {sorted(rows)}"
    for package, allowed in LAYERS.items():
        cell = rows[package]
        named = {p for p in LAYERS if re.search(rf"\b{p}\b", cell)}
        if "everything" in cell:
            named = set(LAYERS) - {package}
        assert named == allowed, f"DEVELOPERS.md: {package} may import {sorted(named)}, the test says {sorted(allowed)}"


def test_the_scan_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    """Imports inside functions and under TYPE_CHECKING are edges; a parent package is not."""
    pkg = tmp_path / "facemodel"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
                              "def f():\n    import numpy\n")
    (pkg / "b.py").write_text("def g():\n    from . import a\n    from facemodel import a as again\n")
    edges, external = import_graph(tmp_path)
    assert edges == {"facemodel": {"facemodel.a"}, "facemodel.a": {"facemodel.b"}, "facemodel.b": {"facemodel.a"}}
    assert external == {"facemodel.a": {"typing", "numpy"}}
    assert cycles(edges) == [["facemodel.a", "facemodel.b", "facemodel.a"]]


if __name__ == "__main__":
    graph, _ = import_graph(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    for package, targets in sorted(package_graph(graph).items()):
        print(f"{package} -> {', '.join(sorted(targets))}")
    for cycle in cycles(graph):
        print("cycle:", " → ".join(cycle))
