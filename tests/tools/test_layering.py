"""The library never imports its applications (fastlogits.tools).

The core is every module of the fastlogits package outside
``fastlogits/tools/``. The one exception is ``fastlogits/__main__.py``, the
shim that makes ``python -m fastlogits`` run the command (importing it runs
the command, so it is not a module of the library).

Two checks: importing ``fastlogits`` and every core module in a fresh
interpreter leaves no ``fastlogits.tools`` module in ``sys.modules``, and no
core module's source has an import of ``fastlogits.tools`` (absolute,
relative, or a module name handed to importlib), wherever it stands.
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fastlogits"
SHIM = "fastlogits.__main__"
TOOLS = "fastlogits.tools"


def _core_modules():
    """(module name, path) of every core module, found from the files (not
    by pkgutil.walk_packages, which imports the packages it walks, tools
    included)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if name == TOOLS or name.startswith(TOOLS + ".") or name == SHIM:
            continue
        out.append((name, path))
    return out


def _is_tools(name):
    return name == TOOLS or name.startswith(TOOLS + ".")


def _tools_imports(name, path):
    """The lines of ``path`` (module ``name``) that import fastlogits.tools."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(_is_tools(a.name) for a in node.names):
                found.append(node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if _is_tools(module) or any(_is_tools(f"{module}.{a.name}") for a in node.names):
                found.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # importlib.import_module("fastlogits.tools...") and the like
            if re.fullmatch(r"fastlogits\.tools(\.\w+)*", node.value):
                found.append(node.lineno)
    return found


def test_core_modules_found():
    names = {n for n, _ in _core_modules()}
    assert {"fastlogits", "fastlogits.api", "fastlogits.cpu", "fastlogits.reference"} <= names
    assert not any(_is_tools(n) for n in names)


def test_no_core_module_imports_tools():
    bad = {name: lines for name, path in _core_modules() if (lines := _tools_imports(name, path))}
    assert not bad, f"core modules importing {TOOLS} (module: lines): {bad}"


def test_the_checker_sees_every_form(tmp_path):
    src = tmp_path / "m.py"
    forms = ["import fastlogits.tools.cli", "from fastlogits.tools import png",
             "from fastlogits import tools", "from ..tools import files", "from .. import tools",
             "import importlib; importlib.import_module('fastlogits.tools.demo')"]
    for form in forms:
        src.write_text(form + "\n")
        assert _tools_imports("fastlogits.cpu.m", src), form
    src.write_text("from fastlogits import api\nfrom .. import _checks\nimport fastlogits.toolsy\n")
    assert not _tools_imports("fastlogits.cpu.m", src)


_IMPORT_ALL = """
import importlib, json, sys
names = json.loads(sys.argv[1])
import fastlogits
after_package = sorted(m for m in sys.modules if m == "fastlogits.tools" or m.startswith("fastlogits.tools."))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an optional dependency (the CUDA toolkit) missing
        failed[name] = repr(exc)
tools = sorted(m for m in sys.modules if m == "fastlogits.tools" or m.startswith("fastlogits.tools."))
print(json.dumps({"after_package": after_package, "tools": tools, "failed": failed}))
"""


def test_importing_the_core_loads_no_tools():
    names = [n for n, _ in _core_modules()]
    r = subprocess.run([sys.executable, "-c", _IMPORT_ALL, json.dumps(names)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.splitlines()[-1])
    assert res["after_package"] == [], "import fastlogits loaded " + ", ".join(res["after_package"])
    assert res["tools"] == [], "importing the core loaded " + ", ".join(res["tools"])
    # Only CUDA modules may be unimportable (no CUDA toolkit); everything
    # else must have been imported, so the check above covered it.
    assert all(n.startswith("fastlogits.cuda") for n in res["failed"]), res["failed"]
