"""``cellseg-export`` / ``scripts/export.py``: a trained run as a BioImage Model Zoo (bioimage.io) package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cellseg.cli import add_model_choice, input_errors, model_folder, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="export.py",
        description=(
            "Write a bioimage.io model package (spec 0.5) of a trained run, for Fiji (deepImageJ), QuPath, "
            "napari and ilastik: rdf.yaml, README, cover, test tensors, a TensorFlow SavedModel that runs "
            "without cellseg, and the .keras file it came from."
        ),
        epilog="example: python scripts/export.py --run runs/20261123-134336_relu_s0 --out models/relu --zip",
    )
    add_model_choice(p)
    p.add_argument("--out", type=Path, required=True, help="the package folder to write")
    p.add_argument("--zip", action="store_true", help="also write OUT.zip, the form the model zoo takes")
    p.add_argument("--author", default="cellseg user", help="author name in the package")
    p.add_argument(
        "--github-user",
        help="the author's GitHub user name (the model zoo asks for one; validation checks it online)",
    )
    return p


def _validate(package: Path) -> str | None:
    """bioimage.io's own format check, when the ``export`` extra is installed."""
    try:
        from bioimageio.spec import load_description
    except ImportError:
        return None
    summary = load_description(package, format_version="discover").validation_summary
    warnings = [w.msg for d in summary.details for w in d.warnings]
    errors = [e.msg for d in summary.details for e in d.errors]
    return f"bioimage.io validation: {summary.status}" + "".join(f"\n  {m}" for m in errors + warnings)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = model_folder(parser, args)
    setup_logging()
    from cellseg.package.export import export_run

    try:
        package = export_run(run, args.out, args.zip, args.author, args.github_user)
    except input_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = _validate(package)
    print(report or "bioimage.io validation skipped: pip install 'cellseg[export]' to check the package")
    print(package)
    return 1 if report is not None and "failed" in report.splitlines()[0] else 0


if __name__ == "__main__":
    sys.exit(main())
