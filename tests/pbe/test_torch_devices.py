"""The torch dPBE code puts every tensor it creates on the solver's device.

No machine that runs the tests has CUDA, so a tensor made on the CPU by default (a
``torch.arange`` without ``device=``) would pass every test here and fail on the first
GPU worker. This reads the modules' source instead: each call of a torch factory function
names its device, or makes its tensor from another one (``*_like``, ``new_*``), and a
tensor goes to numpy only through ``.cpu()``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PBE = Path(__file__).resolve().parents[2] / "hpcopt" / "problems" / "pbe"
MODULES = ["torch_solver.py", "torch_bdf.py", "gradient.py"]
FACTORIES = {
    "arange", "as_tensor", "empty", "eye", "full", "linspace", "ones", "rand", "randn",
    "tensor", "zeros", "sparse_coo_tensor",
}  # fmt: skip


def factory_calls_without_device(source: str) -> list[str]:
    """``torch.<factory>(...)`` calls in ``source`` without a ``device=`` argument, and
    ``.numpy()`` calls not right after ``.cpu()``, as ``"line: call"``."""
    missing = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        func = node.func
        named_torch = isinstance(func.value, ast.Name) and func.value.id == "torch"
        has_device = any(k.arg == "device" for k in node.keywords)
        if named_torch and func.attr in FACTORIES and not has_device:
            missing.append(f"{node.lineno}: {ast.unparse(node)}")
        # a CUDA tensor has no .numpy(): it comes to the host first
        after_cpu = (
            isinstance(func.value, ast.Call) and getattr(func.value.func, "attr", "") == "cpu"
        )
        if func.attr == "numpy" and not after_cpu:
            missing.append(f"{node.lineno}: {ast.unparse(node)}")
    return missing


@pytest.mark.parametrize("module", MODULES)
def test_every_tensor_the_torch_solver_makes_names_its_device(module: str) -> None:
    assert factory_calls_without_device((PBE / module).read_text()) == []


def test_a_factory_call_without_a_device_is_found() -> None:
    source = "import torch\nx = torch.arange(3)\ny = torch.zeros(2, device=d)\nz = y.numpy()\n"
    assert factory_calls_without_device(source) == ["2: torch.arange(3)", "4: y.numpy()"]
