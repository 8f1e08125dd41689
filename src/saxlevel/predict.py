"""Run a trained model on one new subject's DICOM folder and return the level of every slice.

The images go through exactly the training path, with the choices the model recorded when it was
trained (saxlevel.json "preprocessing"): the filter_dicom indexer (bad files dropped and stack defects
repaired, each with a warning; an error only when nothing usable is left), the geometric apex->base
order, to_png's ED/ES choice and percentile window, the square resize to the model's image size, the
backbone's preprocess_input, the backbone, then the head. ``export`` turns a head trained on the feature
cache plus its frozen extractor into one self-contained model file.
"""

from __future__ import annotations

import json
import re
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saxlevel import CLASS_INDEX, CLASSES, io
from saxlevel.evaluation import coverage, decode
from saxlevel.ingest import images, pngs
from saxlevel.learning import backbones, features
from saxlevel.realheart import runs
from saxlevel.sources import contract, dicom_folder, kaggle, nifti, niftiindex, rules

# The real-heart model shipped inside the package (realheart/dvc.yaml trains it; MODEL_CARD.md beside it).
SHIPPED_MODEL = Path(__file__).resolve().parent / "shipped" / "realheart.keras"


class PredictError(ValueError):
    """The folder or the model cannot be used; the message says why and what to do."""


@dataclass
class LoadedModel:
    info: dict
    head: Any
    backbone: Any | None  # the frozen extractor; None for a self-contained fine-tuned model


def default_model() -> Path:
    """The model predict uses without --model: the shipped real-heart model."""
    if not SHIPPED_MODEL.is_file():
        raise PredictError(f"the shipped real-heart model {SHIPPED_MODEL} is missing from this install: reinstall "
                           "saxlevel, or pass --model PATH")
    return SHIPPED_MODEL


def level_definition(info: dict) -> str:
    """How a model's levels are defined: the consensus thirds (real-heart model) or the paper's papillary-muscle
    rule (every model trained before models recorded it)."""
    return str(info.get("level_definition", runs.PAPER_DEFINITION))


def default_decoding(info: dict) -> str:
    """A model's own decoding: anatomical for the real-heart model, argmax (the paper's) for the others."""
    return str(info.get("decoding", "argmax"))


def model_info(path: str | Path) -> dict:
    """The saxlevel.json that train stores inside a .keras model file."""
    path = Path(path)
    if not path.exists():
        raise PredictError(f"model {path} not found: train it with `dvc repro` or pass --model")
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("saxlevel.json"))
    except (KeyError, zipfile.BadZipFile):
        raise PredictError(f"{path} is not a saxlevel model (no saxlevel.json inside)") from None


def load_model(path: str | Path, backbone_model: str | Path | None = None) -> LoadedModel:
    """Load a model. A fine-tuned model (input 'gray') holds its backbone and preprocessing and is loaded
    alone; a head trained on the feature cache is loaded with the frozen extractor saved by extract
    (BatchNorm statistics included)."""
    from saxlevel import tfquiet

    tfquiet.import_tensorflow()
    import keras

    from saxlevel.learning import finetune  # noqa: F401  (registers the custom layers of fine-tuned models)

    info = model_info(path)
    if info.get("classes") != list(CLASSES):
        raise PredictError(f"{path} was trained with classes {info.get('classes')}, expected {list(CLASSES)}")
    if info.get("kind") == "cavity":  # the real-heart model: one self-contained U-Net (realheart)
        return LoadedModel(info, keras.models.load_model(path, compile=False), None)
    if info.get("input") == "gray":
        return LoadedModel(info, keras.models.load_model(path), None)
    candidates = [Path(backbone_model)] if backbone_model else [
        Path(info["feature_extractor"]), Path(path).parent.parent / info["feature_extractor"]]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise PredictError(f"frozen backbone {info['feature_extractor']} not found (made by `dvc repro "
                           f"extract@{info['backbone']}`); pass --backbone-model PATH")
    return LoadedModel(info, keras.models.load_model(path), keras.models.load_model(found))


def stack_probabilities(model: LoadedModel, gray: np.ndarray) -> np.ndarray:
    """(T, 5) level probabilities for one stack of (T, S, S) uint8 images ordered apex->base."""
    from saxlevel.learning.heads import RNN_HEADS

    info = model.info
    if model.backbone is None:  # fine-tuned: gray 0-255 straight into the model
        x = gray.astype(np.float32)[..., None]
    else:
        x = np.asarray(model.backbone(backbones.to_backbone_input(gray, info["backbone"]), training=False))
    if info["head"] in RNN_HEADS:
        return np.asarray(model.head.predict(x[None], verbose=0))[0]
    return np.asarray(model.head.predict(x, verbose=0))


def index_folder(folder: str | Path) -> pd.DataFrame:
    """The subject's image index (apex->base order) from a Kaggle study (sax_N folders), a folder of DICOM files
    in any layout (the SAX cine found from the headers, see sources.dicom_folder), a NIfTI subject folder (ACDC,
    M&Ms, UK Biobank naming) or one NIfTI volume (sources.nifti). Files that cannot be used are
    dropped and stack defects repaired, each with a warning naming it; series that are not the SAX cine (long-axis
    views, localizers) are left out without one, as a whole-study export is expected to hold them."""
    folder = Path(folder)
    if folder.is_file() and nifti.is_nifti(folder):
        name = re.sub(r"(_frame\d+)?\.nii(\.gz)?$", "", folder.name)  # ACDC: patient001_frame01.nii.gz
        rows, problems, _ = niftiindex.index_file(folder, folder.parent.name if name in ("sa", "") else name)
    elif not folder.is_dir():
        raise PredictError(f"{folder} is not a folder of DICOM files or a NIfTI volume (.nii, .nii.gz)")
    elif nifti.subject_layout(folder):
        rows, problems, _ = niftiindex.index_subject(contract.Study(folder.name, "predict", folder), "predict")
    else:
        study = folder / "study" if (folder / "study").is_dir() else folder
        sid = io.subject_id(folder.name if study == folder else study.parent.name)
        if kaggle.sax_folders(study):
            rows, problems, _ = rules.index_entries(sid, "predict", kaggle.sax_entries(study), policy="predict",
                                                    drop_bad_files=True)
        else:
            rows, problems, n_files = dicom_folder.index_subject(contract.Study(sid, "predict", study), policy="predict")
            if not n_files:
                raise PredictError(f"no SAX images in {folder}: expected sax_N folders (Kaggle layout), DICOM "
                                   "files or NIfTI volumes")
    for p in problems:
        if p["action"] not in ("excluded", "ignored"):
            warnings.warn(f"{p['rule']}: {p['detail']}", stacklevel=2)
    fatal = [p for p in problems if p["action"] == "excluded"]
    if fatal:
        raise PredictError("; ".join(f"{p['rule']}: {p['detail']}" for p in fatal[:3]))
    if not rows:
        raise PredictError(f"no SAX images in {folder}: no usable SAX DICOM image was found"
                           + (f" ({len(problems)} file(s) dropped, see the warnings)" if problems else ""))
    return pd.DataFrame(rows)


def preprocessing(info: dict) -> dict:
    """The input preprocessing a model was trained with (recorded by to_png and train in saxlevel.json)."""
    prep = info.get("preprocessing")
    if not prep:
        raise PredictError("the model records no preprocessing (window, ED/ES choice, image size): it was "
                           "trained by an older saxlevel; retrain it with `dvc repro`")
    return prep


def predict_folder(folder: str | Path, model: LoadedModel, frames: str = "ed-es",
                   how: str | None = None) -> pd.DataFrame:
    """One row per (frame, slice): phase, frame, series, order, position_mm, level, the five probabilities, and
    the DICOM path, frame in the file and windowed 8-bit image it came from. Every preprocessing choice (window,
    ED/ES frames, image size) is the one the model was trained with."""
    prep = preprocessing(model.info)
    how = how or default_decoding(model.info)
    pct = (float(prep["window_percentiles"][0]), float(prep["window_percentiles"][1]))
    index = index_folder(folder)
    if frames == "ed-es" and index.frame.nunique() == 1:  # one volume: its phase if the source names it
        named = str(index.phase.iloc[0]) if "phase" in index and str(index.phase.iloc[0]) in ("ED", "ES") else ""
        wanted = [(named or f"F{int(index.frame.iloc[0])}", int(index.frame.iloc[0]))]
    elif frames == "ed-es":
        try:
            notes: list[str] = []
            chosen = pngs.choose_frames(index, prep["ed_frame"], prep["es_frame"], notes)
            for note in notes:
                warnings.warn(note, stacklevel=2)
        except ValueError as exc:  # PixelError, ConstantImage, missing frames: all name the problem
            raise PredictError(f"cannot find ED/ES in {folder}: {exc}") from None
        wanted = [("ED", chosen["ED"]), ("ES", chosen["ES"])]
    elif frames == "all":
        wanted = [(f"F{f}", int(f)) for f in sorted(index.frame.unique())]
    else:
        raise PredictError(f"--frames must be ed-es or all, got {frames!r}")
    rows = []
    for phase, frame in wanted:
        stack = index[index.frame == frame].sort_values("order")
        raw, windowed, keep = [], [], []
        for i, (p, k) in enumerate(zip(stack.path, stack.file_frame)):
            try:
                image, shown = _read_windowed(p, k, pct)
                raw.append(image)
                windowed.append(shown)
                keep.append(i)
            except PredictError as exc:  # one bad image costs its slice in this stack, with a warning
                warnings.warn(f"{phase} frame {frame}: slice dropped: {exc}", stacklevel=2)
        if not keep:
            raise PredictError(f"no image of {phase} frame {frame} in {folder} could be read")
        stack = stack.iloc[keep]
        if model.info.get("kind") == "cavity":
            by_run, probs = _cavity_levels(model, stack, raw, how)
            levels = np.array([CLASS_INDEX[lv] for lv in by_run])
        else:
            gray = np.stack([features.square_resize(img, int(prep["image_size"])) for img in windowed])
            probs = stack_probabilities(model, gray)
            levels = decode.decode_stacks(probs, np.zeros(len(probs)), np.arange(len(probs)), how)
        for k, r in enumerate(stack.itertuples()):
            rows.append({"subject": r.subject, "phase": phase, "frame": frame, "series": r.series,
                         "order": int(r.order), "position_mm": round(float(r.position_mm), 2),
                         "level": CLASSES[levels[k]], **{f"p_{c}": round(float(probs[k, i]), 6)
                                                         for i, c in enumerate(CLASSES)}, "path": r.path,
                         "file_frame": int(r.file_frame), "image": windowed[k]})
    return pd.DataFrame(rows)


def _cavity_levels(model: LoadedModel, stack: pd.DataFrame, raw: list[np.ndarray],
                   how: str) -> tuple[list[str], np.ndarray]:
    """The real-heart model on one stack (rows apex -> base, ``raw`` their stored images): levels by ``how``
    (anatomical: the most likely run of LV slices; argmax / ordered: of the level probabilities) and the level
    probabilities."""
    named, probs, _ = runs.predict_stack(model.head, model.info["calibration"], raw,
                                              float(stack.pixel_spacing.iloc[0]), stack.position_mm.to_numpy(float))
    if how != runs.DECODING:
        named = [CLASSES[i] for i in decode.decode_stacks(probs, np.zeros(len(probs)), np.arange(len(probs)), how)]
    return named, probs


def run(folder: str | Path, model_path: str | Path, out: str | Path, frames: str = "ed-es", how: str | None = None,
        backbone_model: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Load, predict, write OUT/levels.csv, OUT/coverage.csv (does each stack reach beyond the apex and the
    base), OUT/aha.csv (each slice's AHA 17-segment region) and a Figure-3-style PNG per stack marked with the
    AHA regions; (levels table, coverage table, seconds per subject)."""
    from saxlevel.evaluation import figures

    io.check_output_dir(out)
    model = load_model(model_path, backbone_model)
    how = how or default_decoding(model.info)
    if how == runs.DECODING and model.info.get("kind") != "cavity":
        raise PredictError(f"--decode {how} is the real-heart model's; {model_path} decodes argmax or ordered")
    t0 = time.perf_counter()
    table = predict_folder(folder, model, frames, how)
    seconds = time.perf_counter() - t0
    out = Path(out)
    levels = table.drop(columns=["path", "file_frame", "image"])
    cover = coverage.coverage_table(levels)
    aha = coverage.aha_table(levels)
    io.write_csv(out / "levels.csv", levels)
    io.write_csv(out / "coverage.csv", cover)
    io.write_csv(out / "aha.csv", aha)
    name = model.info.get("name") or f"{model.info['backbone']}-{model.info['head']}"
    for (phase, stack), ends in zip(table.groupby("phase", sort=False), cover.itertuples()):
        panel = stack.assign(true=stack.level, pred=stack.level, aha_region=aha.aha_region[stack.index].to_numpy(),
                             aha_segments=aha.aha_segments[stack.index].to_numpy(),
                             path=[_png_of(r.path, r.file_frame, r.image, out / "images") for r in stack.itertuples()])
        reach = ", ".join(f"{end} {'covered' if getattr(ends, end + '_covered') else 'NOT covered'}"
                          for end in coverage.ENDS)
        figures.stack_panels(panel, f"subject {stack.subject.iloc[0]} {phase} (frame {stack.frame.iloc[0]}), "
                             f"{name} ({how}); {reach}", out / f"levels_{phase}.png", show_truth=False)
    return levels, cover, seconds


def _read_windowed(path: str, file_frame: int, pct: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """One image as stored (float32) and windowed to 8 bits, decoded once; an image that cannot be decoded or
    windowed is a PredictError naming it."""
    try:
        image = pngs.read_image(path, file_frame)
        return image, images.window(image, *pct)
    except ValueError as exc:
        raise PredictError(f"{path}: {exc}") from None


def _png_of(dicom_path: str, file_frame: int, image: np.ndarray, folder: Path) -> str:
    """The windowed 8-bit image of one DICOM image as a PNG (for the panel figure); its path."""
    suffix = f"_{int(file_frame) + 1:04d}" if file_frame else ""
    target = folder / (Path(dicom_path).parent.name + "_" + Path(dicom_path).stem + suffix + ".png")
    images.save_png(target, image)
    return str(target)


def export(model_path: str | Path, out: str | Path, backbone_model: str | Path | None = None) -> dict:
    """Write a head trained on the feature cache, with its frozen extractor, as one self-contained .keras
    file (gray image or stack in, levels out: preprocess_input, backbone and head inside, the metadata in
    saxlevel.json). Returns that metadata. Registered layers only: no Lambda, nothing pickled."""
    from saxlevel.learning import finetune

    loaded = load_model(model_path, backbone_model)
    if loaded.backbone is None:
        raise PredictError(f"{model_path} is already one self-contained file (input 'gray'); use it as it is")
    info = dict(loaded.info)
    loaded.backbone.trainable = False
    single = finetune.build_model(info["backbone"], info["head"], loaded.backbone)
    source = [layer for layer in loaded.head.layers if layer.get_weights()]
    target = [layer for layer in finetune.head_layers(single) if layer.get_weights()]
    for a, b in zip(source, target, strict=True):
        b.set_weights(a.get_weights())
    info.pop("feature_extractor", None)
    info.update(input="gray", input_range=[0, 255], exported_from=str(model_path))
    io.save_keras(out, single, extra=info)
    return info
