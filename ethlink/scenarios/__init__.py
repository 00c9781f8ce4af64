"""Built-in scenarios: TOML files shipped with ethlink, run by name (`ethlink run incast-raw`)."""
from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from ..scenario import Scenario, ScenarioError


def names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".toml"))


def path(name: str) -> Path:
    p = resources.files(__package__) / f"{name}.toml"
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
