"""What a fresh install gets: every command has a console entry point, and CI's pinned versions
(requirements/ci.txt) satisfy the ranges pyproject.toml declares."""

from __future__ import annotations

import tomllib

from conftest import ROOT
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_command_has_a_console_entry_point():
    modules = sorted(p.stem for p in (ROOT / "src/cellseg/cli").glob("*.py") if p.stem != "__init__")
    targets = sorted(v.split(":")[0].rsplit(".", 1)[1] for v in PYPROJECT["scripts"].values())
    assert targets == modules
    for script in (ROOT / "scripts").glob("*.py"):  # each script is its command's thin wrapper
        assert "from cellseg.cli." in script.read_text(), script


def test_the_ci_lock_file_pins_every_dependency_within_its_declared_range():
    pins = {}
    for line in (ROOT / "requirements/ci.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-").replace(".", "-")] = version.strip()
    declared = [*PYPROJECT["dependencies"]]
    for extra in ("test", "export", "ray"):
        declared += PYPROJECT["optional-dependencies"][extra]
    for text in declared:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-").replace(".", "-")
        assert name in pins, f"{req.name} is not pinned in requirements/ci.txt: renew it (README)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} is outside {req}"
        )
