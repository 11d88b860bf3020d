"""The package's folders follow the data's path: each group imports only from itself and earlier groups."""

from __future__ import annotations

import ast
from pathlib import Path

import cellseg

#: cellseg's groups in the order data flows through them; a module imports from its group and earlier ones.
ORDER = ["core", "data", "labels", "model", "infer", "evaluate", "train", "package", "sweep", "napari", "cli"]
PACKAGE = Path(cellseg.__file__).parent


def _group(module: str) -> str:
    """``cellseg.infer.slides.segment`` -> ``infer``; ``cellseg`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every cellseg module ``path`` imports, at module level or inside functions (both are dependencies)."""
    module = _module_name(path, package)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cellseg"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cellseg":
                continue
            # ``from cellseg import runs`` names a module, ``from cellseg.core.runs import Run`` does not.
            found |= {f"{target}.{a.name}" for a in node.names} if target == "cellseg" else {target}
    return found


def test_every_module_belongs_to_a_group() -> None:
    groups = {_group(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {""}
    assert groups == set(ORDER), f"groups not in ORDER: {groups - set(ORDER)}; empty: {set(ORDER) - groups}"


def _against_the_path(package: Path) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        group = _group(_module_name(path, package))
        if not group:
            continue
        for target in _imports(path, package):
            other = _group(target)
            if other and ORDER.index(other) > ORDER.index(group):
                wrong.append(f"{_module_name(path, package)} ({group}) imports {target} ({other})")
    return wrong


def test_imports_point_back_along_the_data_path() -> None:
    wrong = _against_the_path(PACKAGE)
    assert not wrong, "imports against the data's path:\n" + "\n".join(wrong)


def test_the_check_sees_imports_against_the_path(tmp_path: Path) -> None:
    """A core module importing the trainer (absolutely, relatively, or inside a function) is caught;
    a train module importing core is not."""
    root = tmp_path / "cellseg"
    for group in ("core", "train"):
        (root / group).mkdir(parents=True)
        (root / group / "__init__.py").write_text("")
    (root / "core" / "a.py").write_text("from cellseg.train.trainer import train\n")
    (root / "core" / "b.py").write_text("def f():\n    from ..train import trainer\n")
    (root / "core" / "c.py").write_text("from cellseg import train\n")
    (root / "train" / "ok.py").write_text(
        "from cellseg.core import runs\nfrom ..core.files import atomic_path\n"
    )
    wrong = _against_the_path(root)
    assert [w.split(" ")[0] for w in wrong] == ["cellseg.core.a", "cellseg.core.b", "cellseg.core.c"], wrong
