"""Built-in scenarios: TOML files shipped with ethlink, run by name (`ethlink run incast-raw`)."""
from __future__ import annotations

import tomllib
from pathlib import Path

from ..scenario import Scenario, ScenarioError


def _files():
    # NOTE: importlib.resources (which imports tempfile: 3.5 ms) on first use; a run of
    # a TOML file by path does not need it.
    from importlib import resources
    return resources.files(__package__)


def names() -> list[str]:
    return sorted(p.name[:-5] for p in _files().iterdir() if p.name.endswith(".toml"))


def path(name: str) -> Path:
    p = _files() / f"{name}.toml"
    if not p.is_file():
        raise ScenarioError(f"no built-in scenario {name!r}; built-in: {', '.join(names())} "
                            f"(or give a path to a .toml file)")
    return Path(str(p))


def describe(name: str) -> str:
    return tomllib.loads(path(name).read_text()).get("description", "")


def load(name_or_path: str, overrides=()) -> Scenario:
    """A scenario by built-in name or by file path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return Scenario.from_toml(p, overrides)
    return Scenario.from_toml(path(name_or_path), overrides)
