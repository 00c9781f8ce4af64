"""The public API is documented and typed: every public function, method and class a
user calls (ethlink's Scenario, Simulation, Result; ethlink.analysis, plots, sweep,
replay, trace readers and writer) has a docstring, and every function its parameter and
return annotations, so notebooks show help and editors complete."""
from __future__ import annotations

import inspect

import pytest

import ethlink
from ethlink import analysis, plots, replay, sweep, trace
from ethlink.sim import Result, Simulation

MODULE_FUNCS = [(m, n) for m in (analysis, plots, sweep, replay) for n, f in vars(m).items()
                if inspect.isfunction(f) and f.__module__ == m.__name__ and not n.startswith("_")]
TRACE_API = ["read_trace", "read_trace_head", "TraceWriter", "TraceInfo", "TraceError"]
CLASSES = [ethlink.Scenario, Simulation, Result]


def public_methods(cls):
    return [(n, f) for n, f in vars(cls).items() if not n.startswith("_") and (inspect.isfunction(f) or isinstance(
        f, (classmethod, staticmethod, property)))]


def check(f, name):
    f = getattr(f, "__func__", None) or getattr(f, "fget", None) or f
    assert inspect.getdoc(f), f"{name}: no docstring"
    if inspect.isclass(f):
        return
    sig = inspect.signature(f)
    untyped = [p for p in sig.parameters.values() if p.name not in ("self", "cls")
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.annotation is inspect.Parameter.empty]
    assert not untyped, f"{name}: parameters without a type: {[p.name for p in untyped]}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{name}: no return type"


@pytest.mark.parametrize("mod, name", MODULE_FUNCS, ids=[f"{m.__name__}.{n}" for m, n in MODULE_FUNCS])
def test_module_functions(mod, name):
    check(getattr(mod, name), f"{mod.__name__}.{name}")


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_classes_and_methods(cls):
    assert inspect.getdoc(cls), cls
    for name, f in public_methods(cls):
        check(f, f"{cls.__name__}.{name}")


@pytest.mark.parametrize("name", TRACE_API)
def test_trace_api(name):
    check(getattr(trace, name), f"trace.{name}")
