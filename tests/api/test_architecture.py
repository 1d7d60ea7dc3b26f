"""The package's layering: no import circle, and no module importing
another subpackage's underscore names (fastlogits._frontend's rule).

The graph counts every import, at module level or inside a function:
a lazy import is still a dependency a reader has to follow.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "fastlogits"


def _module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path, name, modules):
    """``[(module, imported name or None)]`` that ``path`` imports from the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fastlogits"):
                    found.append((a.name, None))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("fastlogits"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in modules:  # "from fastlogits import api": the module
                    found.append((sub, None))
                else:
                    found.append((base, a.name))
    return found


def _graph():
    modules = _modules()
    return modules, {name: _imports(path, name, modules) for name, path in modules.items()}


def _subpackage(module, modules):
    """The package a module belongs to (a package belongs to itself)."""
    if modules[module].name == "__init__.py":
        return module
    return module.rsplit(".", 1)[0]


def test_no_import_circle():
    modules, graph = _graph()
    edges = {m: sorted({t for t, _ in imps if t in modules and t != m}) for m, imps in graph.items()}
    # A package's __init__ importing its own submodules is not a circle.
    for m in edges:
        edges[m] = [t for t in edges[m] if not (m + ".").startswith(t + ".")]
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges.get(m, []):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_underscore_names_across_subpackages():
    modules, graph = _graph()
    bad = []
    for m, imps in graph.items():
        for target, name in imps:
            if target not in modules:
                continue
            private_module = any(part.startswith("_") and part != "__init__"
                                 for part in target.split(".")[1:])
            private_name = name is not None and name.startswith("_") and not name.startswith("__")
            if (private_module or private_name) and (_subpackage(target, modules)
                                                      != _subpackage(m, modules)):
                # The package's own private modules serve every layer below
                # the public API; the rule is about subpackages' internals.
                if (private_module and _subpackage(target, modules) == "fastlogits"
                        and not private_name):
                    continue
                bad.append(f"{m} imports {target}{'.' + name if name else ''}")
    assert not bad, "\n".join(sorted(bad))


def test_public_modules_hold_public_functions_only():
    """api, losses and head import no one another and nothing of a backend."""
    modules, graph = _graph()
    public = {"fastlogits.api", "fastlogits.losses", "fastlogits.head"}
    for m in public:
        targets = {t for t, _ in graph[m]}
        assert not targets & (public - {m}), m
        assert not any(t.startswith(("fastlogits.cpu", "fastlogits.cuda")) for t in targets), m
