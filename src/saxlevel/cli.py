"""The `saxlevel` command: phantom, predict, export and label subcommands (the pipeline itself runs with
`dvc repro`)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from saxlevel import CLASSES


def _phantom(args: argparse.Namespace) -> int:
    from saxlevel import params as P
    from saxlevel.phantom import PhantomParams, make_phantom

    rates, cut = ({name: float(value) for name, _, value in (item.partition("=") for item in items or [])}
                  for items in (args.defect, args.truncated))
    params = PhantomParams.from_params(P.load(args.params), subjects=args.subjects, seed=args.seed,
                                       frames=args.frames, jobs=args.jobs, defect_rates=rates, format=args.format,
                                       transfer_syntax=args.transfer_syntax, truncated=cut)
    truth = make_phantom(args.out, params)
    n_def = sum(1 for s in truth["subjects"].values() if s["defects"])
    n_cut = sum(1 for s in truth["subjects"].values() if s.get("truncated"))
    print(f"phantom: {len(truth['subjects'])} subjects ({n_def} with defects, {n_cut} stopping short of the apex or "
          f"base) written to {args.out}")
    return 0


def _default_model(params_path: str) -> str:
    from saxlevel import params as P

    prm = P.load(params_path)
    backbone, head = P.selected_model(prm)
    return f"models/{backbone}-{head}.keras"


def _predict(args: argparse.Namespace) -> int:
    from saxlevel import predict
    from saxlevel.evaluation import coverage

    out = args.out or f"predictions/{Path(args.dicom_dir).resolve().name}"
    try:
        from saxlevel.cohort import roots

        studies = roots.find_cohort(args.dicom_dir)
    except (OSError, ValueError) as exc:
        print(f"saxlevel predict: error: {exc}", file=sys.stderr)
        return 2
    if studies is not None:
        return _predict_cohort(args, studies, out)
    if args.workers or args.scheduler:
        print(f"saxlevel predict: note: {args.dicom_dir} is one study; --workers/--scheduler apply to a root of "
              "studies and are not used", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = args.model or str(predict.default_model())
            info = predict.model_info(model)
            how = args.decode or predict.default_decoding(info)
            print(f"model: {model}\nlevel definition: {predict.level_definition(info)}; decoding: {how}")
            table, cover, seconds = predict.run(args.dicom_dir, model, out, args.frames, how, args.backbone_model,
                                                figures=args.figures != "none")
        except (predict.PredictError, OSError) as exc:
            print(f"saxlevel predict: error: {exc}", file=sys.stderr)
            return 2
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"saxlevel predict: warning: {w.message}", file=sys.stderr)
    show = table[["phase", "frame", "order", "series", "position_mm", "level"]].copy()
    show["p"] = table[[f"p_{lvl}" for lvl in CLASSES]].max(axis=1).round(3)
    print(show.to_string(index=False))
    print("\nLV coverage (apex covered: the stack reaches an out-of-apical slice; base: an out-of-basal one)")
    print(cover[["phase", "frame", "n_slices", "first_level", "last_level", "apex_covered", "base_covered",
                 "confidence"]].to_string(index=False))
    print(f"coverage: {coverage.verdict(cover)}")
    print(f"{Path(model).stem}: {table.order.nunique()} slices x {table.phase.nunique()} frame(s) "
          f"in {seconds:.2f} s (model loading excluded); wrote {out}/levels.csv, {out}/coverage.csv, "
          f"{out}/aha.csv (AHA 17-segment regions)" + ("" if args.figures == "none" else f" and {out}/levels_*.png"))
    return 0


def _predict_cohort(args: argparse.Namespace, studies: list, out: str) -> int:
    """`saxlevel predict ROOT`: every study of a root, one row each in OUT/cohort.csv."""
    from saxlevel import predict
    from saxlevel.cohort import run

    try:
        model = args.model or str(predict.default_model())
        info = predict.model_info(model)
        how = args.decode or predict.default_decoding(info)
        print(f"model: {model}\nlevel definition: {predict.level_definition(info)}; decoding: {how}")
        print(f"{args.dicom_dir}: a root of {len(studies)} studies; writing {out}/<subject>/ and {out}/cohort.csv")
        settings = run.Settings(model, args.backbone_model, args.frames, how, args.figures or "incomplete")
        table = run.run_cohort(studies, settings, out, args.jobs, scheduler=args.scheduler, workers=args.workers)
    except (predict.PredictError, OSError) as exc:
        print(f"saxlevel predict: error: {exc}", file=sys.stderr)
        return 2
    ok = table[table.status == "ok"]
    print(f"{len(table)} subjects: {int((ok.verdict == 'complete').sum())} complete, "
          f"{int((ok.verdict == 'incomplete').sum())} incomplete, {int((table.status == 'error').sum())} errors; "
          f"wrote {out}/cohort.csv and {out}/cohort.html")
    return 0


def _label(args: argparse.Namespace) -> int:
    from saxlevel import labeler

    return labeler.main(args)


def _export(args: argparse.Namespace) -> int:
    from saxlevel import predict

    model = args.model or _default_model(args.params)
    out = Path(args.out or Path("models/exported") / Path(model).name)
    try:
        info = predict.export(model, out, args.backbone_model)
    except (predict.PredictError, OSError) as exc:
        print(f"saxlevel export: error: {exc}", file=sys.stderr)
        return 2
    print(f"export: {info['backbone']}-{info['head']} with its frozen backbone and preprocessing -> {out} "
          f"({out.stat().st_size / 1e6:.1f} MB); `saxlevel predict --model {out} DICOM_DIR` needs nothing else")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `predict`, `export` and `label` on the `saxlevel` parser."""
    p = sub.add_parser("predict", help="levels of every slice of one study, or of every study of a cohort root")
    p.add_argument("dicom_dir", help="one study (a Kaggle study, a folder of one patient's DICOM in any layout, a NIfTI "
                   "subject or volume) or a root of many (a Kaggle tree, a folder of subject folders, a NIfTI dataset): "
                   "the headers decide")
    p.add_argument("--model", help="any saxlevel model: models/BACKBONE-HEAD.keras, a fine-tuned "
                   "models/finetuned/BACKBONE-HEAD.keras, an exported one (default: the real-heart model shipped in "
                   "the package, see its MODEL_CARD.md)")
    p.add_argument("--backbone-model", help="frozen backbone .keras for a head trained on the feature cache (default: the one recorded "
                   "in the model; fine-tuned models hold their backbone)")
    p.add_argument("--out", help="output folder (default: predictions/<folder name>); for a root: OUT/<subject>/ per "
                   "study, OUT/cohort.csv and OUT/cohort.html")
    p.add_argument("--frames", default="ed-es", choices=["ed-es", "all"])
    p.add_argument("--figures", choices=["none", "incomplete", "all"],
                   help="which studies get figures (default: all for one study; incomplete for a root, figures only "
                        "where coverage fails)")
    p.add_argument("--jobs", type=int, default=2, help="processes that read a root's studies (default 2)")
    p.add_argument("--workers", type=int, default=0,
                   help="run a root on a local Dask cluster of N worker processes, each holding the model once")
    p.add_argument("--scheduler", help="run a root on a running Dask cluster: its scheduler's address "
                   "(tcp://host:8786); the studies and --out must be on a filesystem every worker sees")
    p.add_argument("--decode", choices=["argmax", "ordered", "anatomical"],
                   help="default: the model's own (the real-heart model: anatomical, the most likely single run of "
                        "LV slices, so levels never go backwards; models of the paper's grid: argmax)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("export", help="one self-contained model file: a head with its frozen backbone and preprocessing")
    p.add_argument("--model", help="models/BACKBONE-HEAD.keras (default: the selected backbone/head in params.yaml)")
    p.add_argument("--backbone-model", help="frozen backbone .keras (default: the one recorded in the model)")
    p.add_argument("--out", help="output .keras (default: models/exported/BACKBONE-HEAD.keras)")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_export)

    p = sub.add_parser("label", help="label SAX stacks by hand (the paper's matplotlib labeler)")
    p.add_argument("--index", default="data/png/index.csv", help="to_png's index.csv")
    p.add_argument("--labels", required=True, help="labels CSV to create or continue")
    p.add_argument("--predictions", help="a predictions CSV, saxlevel predict's levels.csv (e.g. the real-heart model's), "
                        "or a labels CSV such as to_png's levels from a segmentation (data/png/labels.csv): show it and "
                        "pre-fill unlabeled slices")
    p.add_argument("--user", help="name recorded in labeled_by (default: $USER)")
    p.add_argument("--review", choices=["uncertain"],
                   help="order subjects by the model's uncertainty (least confident first); needs --predictions")
    p.set_defaults(func=_label)


def build_parser() -> argparse.ArgumentParser:
    from saxlevel.phantom import dicomio, plan

    parser = argparse.ArgumentParser(prog="saxlevel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write a synthetic Kaggle-layout cine SAX DICOM tree with labels")
    p.add_argument("--out", required=True, help="output folder (replaced)")
    p.add_argument("--params", default="params.yaml", help="defaults: its phantom section (default: params.yaml)")
    p.add_argument("--subjects", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--frames", type=int, help="frames per cardiac cycle (Kaggle: ~30)")
    p.add_argument("--jobs", type=int)
    p.add_argument("--defect", action="append", metavar="NAME=RATE",
                   help="defect rate, e.g. --defect duplicate=0.1 (duplicate, inconsistent, noncontiguous, black)")
    p.add_argument("--truncated", action="append", metavar="END=RATE",
                   help="share of stacks that stop short of an end, e.g. --truncated apex=0.5 (apex, base; "
                        "default: params.yaml phantom.truncated)")
    p.add_argument("--format", choices=plan.FORMATS,
                   help="classic: one file per image (Kaggle); enhanced: one Enhanced MR multi-frame file per series; "
                        "clinical: one folder per subject as a PACS exports it (PH0001/1.dcm ..., one SAX series); "
                        "nifti: ACDC's layout, ED/ES volumes with segmentations (training/patient0001/...)")
    p.add_argument("--transfer-syntax", choices=sorted(dicomio.TRANSFER_SYNTAXES),
                   help="write every file in this lossless transfer syntax (default: uncompressed, as Kaggle)")
    p.set_defaults(func=_phantom)

    add_commands(sub)
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
