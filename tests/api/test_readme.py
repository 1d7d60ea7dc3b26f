"""Every Python block of README.md runs, so a broken example fails CI.

Blocks run in order in one namespace per block; a block that uses a GPU
(``device="cuda"``) runs only where the CUDA backend has a real GPU and
PyTorch's CUDA build, and a block that imports an optional library
(torch, xarray) only where it is installed."""

import importlib.util
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "README.md")


def _blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        line = text.count("\n", 0, m.start()) + 1
        yield pytest.param(m.group(1), id=f"line{line}")


def _has_torch_cuda():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _missing_imports(code):
    """The top-level modules a block imports that are not installed."""
    names = re.findall(r"^(?:import|from)\s+([A-Za-z_]\w*)", code, re.M)
    return sorted({n for n in names if importlib.util.find_spec(n) is None})


@pytest.mark.parametrize("code", list(_blocks()))
def test_readme_block(code):
    missing = _missing_imports(code)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    if 'device="cuda"' in code and not _has_torch_cuda():
        pytest.skip("needs a GPU and PyTorch's CUDA build")
    exec(compile(code, README, "exec"), {"__name__": "readme"})


def test_missing_imports_skip_a_block():
    code = "import numpy as np\nimport no_such_module_xyz\nfrom fastlogits import api\n"
    assert _missing_imports(code) == ["no_such_module_xyz"]


def test_readme_has_blocks():
    assert len(list(_blocks())) >= 4
