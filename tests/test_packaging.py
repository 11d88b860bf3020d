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
    for extra in ("test", "export", "ray", "napari"):
        declared += PYPROJECT["optional-dependencies"][extra]
    for text in declared:
        req = Requirement(text)
        if req.name == "cellseg":  # the test extra takes the napari extra: pinned above
            continue
        name = req.name.lower().replace("_", "-").replace(".", "-")
        assert name in pins, f"{req.name} is not pinned in requirements/ci.txt: renew it (README)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} is outside {req}"
        )


def _module_imports(path):
    """cellseg modules a module imports anywhere in it (deferred imports too), but for type checking."""
    import ast

    tree = ast.parse(path.read_text())
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cellseg"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cellseg"))
    return found


def test_no_import_cycle_inside_cellseg():
    src = ROOT / "src"
    modules = {
        ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (src / "cellseg").rglob("*.py")
    }
    graph = {m: {i for i in _module_imports(p) if i in modules and i != m} for m, p in modules.items()}
    for m in modules:  # a package's own __init__ is imported by its submodules: not a cycle of theirs
        graph[m] -= {parent for parent in modules if m.startswith(parent + ".")}

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    for module in sorted(modules):
        cycle = cycle_from(module, module, [module])
        assert cycle is None, " -> ".join(cycle)
