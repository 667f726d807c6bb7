"""The Lambda layer installs shared/requirements.txt; the venv installs pyproject's dependencies.

If the two drift, the tests run against one set of versions and Lambda runs another.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        requirement = Requirement(line)
        assert len(requirement.specifier) == 1, f"{line!r} is not pinned to one version"
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{line!r} is not pinned with =="
        pins[requirement.name.lower()] = spec.version
    return pins


def test_the_layer_and_the_package_pin_the_same_runtime_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    layer_lines = [
        line.strip()
        for line in (ROOT / "shared" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert _pins(layer_lines) == _pins(project["dependencies"])


def test_every_dev_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _pins(project["optional-dependencies"]["dev"])
