"""The `saxlevel` command: phantom, predict and label subcommands (the pipeline itself runs with `dvc repro`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _phantom(args: argparse.Namespace) -> int:
    from saxlevel.phantom import PhantomParams, make_phantom

    rates = dict(PhantomParams().defect_rates)
    for item in args.defect or []:
        name, _, value = item.partition("=")
        rates[name] = float(value)
    params = PhantomParams(subjects=args.subjects, seed=args.seed, frames=args.frames, jobs=args.jobs,
                           defect_rates=rates, format=args.format, transfer_syntax=args.transfer_syntax)
    truth = make_phantom(args.out, params)
    n_def = sum(1 for s in truth["subjects"].values() if s["defects"])
    print(f"phantom: {len(truth['subjects'])} subjects ({n_def} with defects) written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from saxlevel.phantom import dicomio

    parser = argparse.ArgumentParser(prog="saxlevel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write a synthetic Kaggle-layout cine SAX DICOM tree with labels")
    p.add_argument("--out", required=True, help="output folder (replaced)")
    p.add_argument("--subjects", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=10, help="frames per cardiac cycle (Kaggle: ~30)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--defect", action="append", metavar="NAME=RATE",
                   help="defect rate, e.g. --defect duplicate=0.1 (duplicate, inconsistent, noncontiguous, black)")
    p.add_argument("--format", default="classic", choices=dicomio.FORMATS,
                   help="classic: one file per image (Kaggle); enhanced: one Enhanced MR multi-frame file per series")
    p.add_argument("--transfer-syntax", default="explicit", choices=sorted(dicomio.TRANSFER_SYNTAXES),
                   help="write every file in this lossless transfer syntax (default: uncompressed, as Kaggle)")
    p.set_defaults(func=_phantom)

    from saxlevel import cli_more

    cli_more.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"saxlevel {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
