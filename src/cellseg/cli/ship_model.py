"""``cellseg-ship-model`` / ``scripts/ship_model.py``: a trained run becomes a model shipped with cellseg."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import Any

from cellseg.cli import input_errors, setup_logging

DSB2018 = "2018 Data Science Bowl stage-1 training set (BBBC038, Caicedo et al. 2019), CC0"
MONUSEG = "MoNuSeg 2018 training images (Kumar et al. 2017, 2020), CC BY-NC-SA 4.0"
CITATIONS = {
    "dsb2018": "Caicedo et al., Nucleus segmentation across imaging experiments: the 2018 Data Science "
    "Bowl, Nature Methods 16, 1247-1253 (2019), doi:10.1038/s41592-019-0612-7",
    "monuseg": "Kumar et al., IEEE TMI 36(7) 2017, doi:10.1109/TMI.2017.2677499; Kumar et al., IEEE TMI "
    "39(5) 2020, doi:10.1109/TMI.2019.2947628",
}


def _machine(machine: dict[str, Any]) -> str:
    """What a run trained on, as its card says it: "AMD EPYC, 2 cores, mixed_bfloat16" (or its GPUs)."""
    cores = machine["cores"]
    where = ", ".join(machine["gpus"]) or f"{machine['cpu']}, {cores} core{'s' * (cores != 1)}"
    return f"{where}, {machine['precision']}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ship_model.py",
        description=(
            "Make a model that ships inside cellseg (cellseg.infer.pretrained, predict.py --model) from a "
            "finished run: its model files, scores on held-out images and its own validation images, "
            "a model card and a picture of its weakest held-out images."
        ),
        epilog="example: python scripts/ship_model.py --run runs/<run> --name dsb2018 "
        "--test-data ../shared/data/dsb2018/stage1_test",
    )
    p.add_argument("--run", type=Path, required=True, metavar="RUN_DIR", help="a finished run folder")
    p.add_argument("--name", required=True, help="the model's name (predict.py --model NAME)")
    p.add_argument("--test-data", required=True, metavar="PATH", help="held-out annotated images")
    p.add_argument(
        "--extra-test-data",
        nargs="+",
        default=[],
        metavar="PATH",
        help="more held-out annotated images scored on the card, e.g. a modality the test images lack "
        "(H&E tissue: ../shared/data/monuseg for a model that never saw it)",
    )
    p.add_argument("--description", required=True, help="one paragraph: what the model segments")
    p.add_argument(
        "--data",
        nargs="+",
        choices=sorted(CITATIONS),
        required=True,
        help="the data sets it was trained on; MoNuSeg makes the model CC BY-NC-SA 4.0",
    )
    p.add_argument(
        "--recipe", required=True, help="the config it was trained with, e.g. configs/dsb2018.yaml"
    )
    p.add_argument("--failures", required=True, help="known failure cases, in words")
    p.add_argument(
        "--weights",
        choices=("float32", "float16"),
        default="float32",
        help="how the weights are stored: float16 halves the file (the model still computes in float32); "
        "the card's scores are those of what ships",
    )
    p.add_argument("--zoo", type=Path, help="where shipped models live (default: inside the package)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    from cellseg.core import runs
    from cellseg.package import shipping

    run = runs.Run(args.run)
    summary = run.summary
    started = summary.init  # a fine-tuned run: the model it started from, with its data and licence
    data = "; ".join(DSB2018 if d == "dsb2018" else MONUSEG for d in args.data)
    licences = ["CC-BY-NC-SA-4.0" if "monuseg" in args.data else "CC0-1.0"]
    citations = [CITATIONS[d] for d in args.data]
    if started:
        data += f"; fine-tuned from {started['init']} (trained on: {started.get('data', 'see its run')})"
        licences.append(started["licence"])
        cited = started.get("citation", [])
        citations += [c for c in ([cited] if isinstance(cited, str) else cited) if c not in citations]
    card = {
        "description": args.description,
        "data": data,
        "licence": shipping.combined_licence(licences),
        "citation": citations,
        **({"started_from": started} if started else {}),
        "recipe": args.recipe,
        "training": f"{summary.epochs_run} epochs, {summary.wall_seconds / 60:.0f} min on "
        f"{_machine(summary.machine)}",
        "failures": args.failures,
        "date": dt.date.today().isoformat(),
        "command": " ".join(["python scripts/ship_model.py", *map(shlex.quote, argv or sys.argv[1:])]),
        "run": run.path.name,
    }
    try:
        folder = shipping.ship(
            args.run, args.name, args.test_data, card, args.zoo, args.weights, args.extra_test_data
        )
    except input_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
