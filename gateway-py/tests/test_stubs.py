"""The typed stubs (`_native.pyi`) describe exactly what the extension exports."""

from __future__ import annotations

import ast
import importlib.resources
import inspect
from typing import Dict, Set

import llm_gateway
from llm_gateway import _native


def stub_tree() -> ast.Module:
    text = importlib.resources.files("llm_gateway").joinpath("_native.pyi").read_text()
    return ast.parse(text)


def stub_names() -> Dict[str, Set[str]]:
    """Top-level names of the stub, each with its members (empty for functions and values)."""
    names: Dict[str, Set[str]] = {}
    for node in stub_tree().body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = {
                n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = set()
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = set()
    return names


def test_py_typed_marker_ships() -> None:
    assert importlib.resources.files("llm_gateway").joinpath("py.typed").is_file()


def test_every_export_has_a_stub_and_every_stub_exists() -> None:
    stubs = stub_names()
    exported = {n for n in dir(_native) if not n.startswith("_")} | {"__version__"}
    aliases = {"Headers", "Body", "UsageRecord"}  # type aliases, stub-only
    assert exported == set(stubs) - aliases
    for name, members in stubs.items():
        obj = getattr(_native, name, None)
        if not inspect.isclass(obj):
            continue
        public = {m for m in dir(obj) if not m.startswith("_")}
        dunders = {"__aiter__", "__anext__", "__aenter__", "__aexit__", "__iter__", "__next__",
                   "__enter__", "__exit__", "__init__"}
        stub_public = {m for m in members if not m.startswith("_")}
        assert stub_public == public, f"{name}: stub {sorted(stub_public)} vs runtime {sorted(public)}"
        for dunder in members & dunders - {"__init__"}:
            assert hasattr(obj, dunder), f"{name}.{dunder} is in the stub but not implemented"


def test_package_reexports_are_listed() -> None:
    for name in llm_gateway.__all__:
        assert hasattr(llm_gateway, name), name
