"""The `saxlevel predict` and `saxlevel label` subcommands."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def _default_model(params_path: str) -> str:
    from saxlevel import params as P

    prm = P.load(params_path)
    backbone, head = P.selected_model(prm)
    return f"models/{backbone}-{head}.keras"


def _predict(args: argparse.Namespace) -> int:
    from saxlevel import predict

    model = args.model or _default_model(args.params)
    out = args.out or f"predictions/{Path(args.dicom_dir).resolve().name}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table, seconds = predict.run(args.dicom_dir, model, out, args.frames, args.decode, args.backbone_model)
        except (predict.PredictError, OSError) as exc:
            print(f"saxlevel predict: error: {exc}", file=sys.stderr)
            return 2
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"saxlevel predict: warning: {w.message}", file=sys.stderr)
    show = table[["phase", "frame", "order", "series", "position_mm", "level"]].copy()
    show["p"] = table[[f"p_{lvl}" for lvl in ("oap", "ap", "mid", "bs", "obs")]].max(axis=1).round(3)
    print(show.to_string(index=False))
    print(f"{Path(model).stem}: {table.order.nunique()} slices x {table.phase.nunique()} frame(s) "
          f"in {seconds:.2f} s (model loading excluded); wrote {out}/levels.csv and {out}/levels_*.png")
    return 0


def _label(args: argparse.Namespace) -> int:
    from saxlevel import labeler

    return labeler.main(args)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `predict` and `label` on the `saxlevel` parser."""
    p = sub.add_parser("predict", help="levels of every slice of one subject's DICOM folder")
    p.add_argument("dicom_dir", help="one subject's study (Kaggle layout) or any folder of SAX DICOMs")
    p.add_argument("--model", help="models/BACKBONE-HEAD.keras or a fine-tuned models/finetuned/BACKBONE-HEAD.keras "
                   "(default: the selected backbone/head in params.yaml)")
    p.add_argument("--backbone-model", help="frozen backbone .keras for a head trained on the feature cache (default: the one recorded "
                   "in the model; fine-tuned models hold their backbone)")
    p.add_argument("--out", help="output folder (default: predictions/<folder name>)")
    p.add_argument("--frames", default="ed-es", choices=["ed-es", "all"])
    p.add_argument("--decode", default="argmax", choices=["argmax", "ordered"])
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_predict)

    p = sub.add_parser("label", help="label SAX stacks by hand (the paper's matplotlib labeler)")
    p.add_argument("--index", default="data/png/index.csv", help="to_png's index.csv")
    p.add_argument("--labels", required=True, help="labels CSV to create or continue")
    p.add_argument("--predictions", help="a predictions CSV: show it and pre-fill unlabeled slices")
    p.add_argument("--user", help="name recorded in labeled_by (default: $USER)")
    p.set_defaults(func=_label)
