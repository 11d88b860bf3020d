"""``scripts/plot_activations.py``: the activations with their derivatives, or a run's learned parameters."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plot_activations.py",
        description=(
            "Draw every registered activation (or the named ones) with its derivative on one grid. With "
            "--run, draw that run's learned activation parameters per epoch instead (e.g. ISRU alpha)."
        ),
        epilog="examples: python scripts/plot_activations.py isru mish relu --out acts.png\n"
        "          python scripts/plot_activations.py --run runs/20261123-134336_isru_s0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", help="registry names or specs like isru:alpha=0.5 (default: all)")
    p.add_argument("--run", type=Path, metavar="RUN_DIR", help="plot this run's learned parameters per epoch")
    p.add_argument("--out", type=Path, help="image file (default activations.png / learned_parameters.png)")
    return p


def _spec(text: str) -> str | dict:
    """``isru:alpha=0.5`` -> {name: isru, alpha: 0.5}; a plain name stays a name."""
    name, _, options = text.partition(":")
    if not options:
        return name
    pairs = (item.split("=", 1) for item in options.split(","))
    return {"name": name, **{k: float(v) for k, v in pairs}}


def gallery(names: list[str], out: Path) -> None:
    import numpy as np

    from cellseg.evaluate.plots import plot_activation_gallery
    from cellseg.model.activations import ACTIVATIONS, activation_curve, get_entry, parse_spec

    # dense near 0 for the plots, wide for the range of each function
    x = np.concatenate([-np.geomspace(1e6, 4, 60), np.linspace(-4, 4, 401), np.geomspace(4, 1e6, 60)])
    curves = {}
    for text in names or list(ACTIVATIONS):
        spec = _spec(text)
        name, options = parse_spec(spec)
        entry = get_entry(spec)
        values = {**entry.defaults, **options}
        kind = "learnable" if entry.learnable else "fixed"
        params = ", ".join(
            f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in values.items()
        )
        subtitle = f"\n{kind} {params}" if params else ""
        y, dy = activation_curve(spec, x)
        curves[name if not options else text] = (x, y, dy, subtitle)
    plot_activation_gallery(curves, out)


def learned(run_dir: Path, out: Path) -> None:
    from cellseg.core import runs
    from cellseg.evaluate.plots import plot_histories

    rows = runs.read_history(run_dir)
    columns = [c for c in rows[0] if "_act." in c]
    if not columns:
        raise ValueError(f"{run_dir}: its activation ({runs.run_label(run_dir)}) has no learnable parameters")
    epochs = [int(r["epoch"]) for r in rows]
    series = {c: [(epochs, [r[c] for r in rows])] for c in columns}
    title = f"learned parameters of {runs.run_label(run_dir)}, {run_dir.name}"
    plot_histories(series, "parameter value", out, title=title, log_scale=False, legend_title="layer")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run is not None:
            out = args.out or Path("learned_parameters.png")
            learned(args.run, out)
        else:
            out = args.out or Path("activations.png")
            gallery(args.names, out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
