"""The package's layering: no import circle, and no module importing
another subpackage's underscore names (fastlogits._frontend's rule). The
root package's private modules serve every layer below the public API;
the applications (fastlogits.tools) stand above it and use the core's
public modules only (fastlogits.preflight, fastlogits.machine, ...).

The graph counts every import, at module level or inside a function:
a lazy import is still a dependency a reader has to follow.
"""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "fastlogits"
TOOLS = "fastlogits.tools"


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


def _is_tools(module):
    return module == TOOLS or module.startswith(TOOLS + ".")


def _private(dotted):
    """Whether a dotted name has an underscore part (dunders aside) past ``fastlogits``."""
    return any(p.startswith("_") and not p.startswith("__") for p in dotted.split(".")[1:])


def _tools_private_uses(path, name, modules):
    """What the tools module ``name`` (at ``path``) takes from the core's
    private side: an import of a private module or name (any form, lazy
    ones included), a module name handed to importlib, or a private
    attribute of a core module it imported (``fl._frontend``)."""
    bad = []
    for target, attr in _imports(path, name, modules):
        if _is_tools(target):
            continue
        full = f"{target}.{attr}" if attr else target
        if _private(full):
            bad.append(full)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = {}  # local name -> core module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fastlogits") and not _is_tools(a.name):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "fastlogits"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in modules and not _is_tools(sub):
                    aliases[a.asname or a.name] = sub
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"fastlogits(\.\w+)+", node.value) and not _is_tools(node.value) \
                    and _private(node.value):
                bad.append(node.value)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in aliases and _private("fastlogits." + node.attr)):
            bad.append(f"{aliases[node.value.id]}.{node.attr}")
    return bad


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
                # fastlogits.tools stands above the public API: no exemption.
                if (private_module and _subpackage(target, modules) == "fastlogits"
                        and not private_name and not _is_tools(m)):
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


def test_tools_use_the_public_core_only():
    """The applications (fastlogits.tools) stand on the public modules of
    the core (fastlogits.preflight, machine, tuning, pool, registry, ...):
    no private module or name of the core, in any form."""
    modules = _modules()
    bad = {m: uses for m, path in modules.items()
           if _is_tools(m) and (uses := _tools_private_uses(path, m, modules))}
    assert not bad, "\n".join(f"{m} uses {', '.join(sorted(set(u)))}" for m, u in sorted(bad.items()))


@pytest.mark.parametrize("form, found", [
    ("from fastlogits import _checks as chk", True),
    ("from fastlogits._layout import size_of", True),
    ("import fastlogits._frontend", True),
    ("from .. import _cpuinfo", True),
    ("from ..cpu import _private", True),
    ("from fastlogits.tuning import _current", True),
    ("def f():\n    from fastlogits import _threading", True),
    ("import fastlogits as fl\nfl._frontend.cuda_status()", True),
    ("from fastlogits import pool\npool._free", True),
    ("import importlib\nimportlib.import_module('fastlogits._vector_width')", True),
    ("from fastlogits import preflight, machine, tuning", False),
    ("import fastlogits\nfastlogits.__version__, fastlogits.__file__", False),
    ("from fastlogits.tools.tiled import _native", False),
    ("from . import files\nfiles._tmp", False),
    ("from fastlogits import __version__", False),
])
def test_the_tools_checker_sees_every_form(tmp_path, form, found):
    src = tmp_path / "m.py"
    src.write_text(form + "\n")
    assert bool(_tools_private_uses(src, "fastlogits.tools.m", _modules())) == found
