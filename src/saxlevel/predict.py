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
    backbone_graph: Any = None  # the frozen extractor as one traced graph function, made on first use


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


def _backbone_features(model: LoadedModel, gray: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The backbone's output for (N, S, S) uint8 images: features (frozen backbone), or the gray images themselves
    for a fine-tuned model, which takes them as they are."""
    if model.backbone is None:  # fine-tuned: gray 0-255 straight into the model
        return gray.astype(np.float32)[..., None]
    x = backbones.to_backbone_input(gray, model.info["backbone"])
    if model.backbone_graph is None:
        # One graph for any batch size, as extract's compiled predict runs the backbone: 1.2 s against eager
        # Keras' 6.0 s for 100 Lite0 images on 2 cores (MobileNet 1.2 against 1.7), after a ~1 s trace; a slice's
        # features do not depend on its batch, so a study's are the same alone or in a cohort's batches.
        import tensorflow as tf

        backbone = model.backbone

        def features_of(images: Any) -> Any:
            return backbone(images, training=False)

        model.backbone_graph = tf.function(features_of, input_signature=[
            tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype))])
    return np.concatenate([np.asarray(model.backbone_graph(x[i:i + batch_size]))
                           for i in range(0, len(x), batch_size)])


def stack_probabilities(model: LoadedModel, grays: list[np.ndarray]) -> list[np.ndarray]:
    """(T, 5) level probabilities of each stack of (T, S, S) uint8 images (apex -> base), any number of stacks
    at once: the backbone runs over batches of slices drawn from all of them (a slice's output does not depend on
    its batch), the head per stack."""
    from saxlevel.learning.heads import RNN_HEADS

    if not grays:
        return []
    out = []
    # The head is called directly: Keras' predict() costs ~90 ms a call in set-up, more than a stack's head takes.
    for x in np.split(_backbone_features(model, np.concatenate(grays)), np.cumsum([len(g) for g in grays])[:-1]):
        if model.info["head"] in RNN_HEADS:
            out.append(np.asarray(model.head(x[None], training=False))[0])
        else:
            out.append(np.asarray(model.head(x, training=False)))
    return out


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


@dataclass
class Stack:
    """One phase's stack of a subject, read and windowed, ready for a model (rows apex -> base)."""

    phase: str
    frame: int
    rows: pd.DataFrame  # the index rows of its readable images
    raw: list[np.ndarray]  # the images as stored (float32)
    windowed: list[np.ndarray]  # windowed to 8 bits with the model's percentiles


def wanted_frames(index: pd.DataFrame, prep: dict, frames: str, folder: str | Path) -> list[tuple[str, int]]:
    """(phase, frame) of each stack to predict: ED and ES chosen as to_png chose them, every frame, or the one
    volume a single-phase source holds (its phase where the source names it)."""
    if frames == "ed-es" and index.frame.nunique() == 1:  # one volume: its phase if the source names it
        named = str(index.phase.iloc[0]) if "phase" in index and str(index.phase.iloc[0]) in ("ED", "ES") else ""
        return [(named or f"F{int(index.frame.iloc[0])}", int(index.frame.iloc[0]))]
    if frames == "ed-es":
        try:
            notes: list[str] = []
            chosen = pngs.choose_frames(index, prep["ed_frame"], prep["es_frame"], notes)
            for note in notes:
                warnings.warn(note, stacklevel=2)
        except ValueError as exc:  # PixelError, ConstantImage, missing frames: all name the problem
            raise PredictError(f"cannot find ED/ES in {folder}: {exc}") from None
        return [("ED", chosen["ED"]), ("ES", chosen["ES"])]
    if frames == "all":
        return [(f"F{f}", int(f)) for f in sorted(index.frame.unique())]
    raise PredictError(f"--frames must be ed-es or all, got {frames!r}")


def prepare_stacks(folder: str | Path, prep: dict, frames: str = "ed-es") -> list[Stack]:
    """Everything before the model, for one subject: its index, the frames to predict, each image read once and
    windowed as the model's training data were (``prep``: the model's preprocessing record). No model needed, so
    this runs in worker processes beside the one that holds the model."""
    pct = (float(prep["window_percentiles"][0]), float(prep["window_percentiles"][1]))
    index = index_folder(folder)
    out = []
    for phase, frame in wanted_frames(index, prep, frames, folder):
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
        out.append(Stack(phase, int(frame), stack.iloc[keep], raw, windowed))
    return out


def infer_stacks(model: LoadedModel, stacks: list[Stack], how: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(level indices, (T, 5) level probabilities) of each stack, the stacks of any number of subjects at once:
    the network runs over batches of slices drawn from all of them, the head or the decoding per stack."""
    if not stacks:
        return []
    decoded = []
    if model.info.get("kind") == "cavity":  # the real-heart model: a U-Net, then presence and decoding
        from saxlevel.realheart import cavitynet, realdata

        x = np.concatenate([realdata.model_input(s.raw, float(s.rows.pixel_spacing.iloc[0])) for s in stacks])
        flips = bool(model.info.get("settings", {}).get("flips", False))
        all_maps = np.split(cavitynet.cavity_maps(model.head, x, flips=flips),
                            np.cumsum([len(s.rows) for s in stacks])[:-1])
        for s, maps in zip(stacks, all_maps):
            named, probs, _ = runs.levels_from_maps(maps, model.info["calibration"],
                                                    s.rows.position_mm.to_numpy(float))
            decoded.append((np.array([CLASS_INDEX[lv] for lv in named]) if how == runs.DECODING else
                            decode.decode_stacks(probs, np.zeros(len(probs)), np.arange(len(probs)), how), probs))
        return decoded
    size = int(preprocessing(model.info)["image_size"])
    grays = [np.stack([features.square_resize(img, size) for img in s.windowed]) for s in stacks]
    for probs in stack_probabilities(model, grays):
        decoded.append((decode.decode_stacks(probs, np.zeros(len(probs)), np.arange(len(probs)), how), probs))
    return decoded


def stack_table(stacks: list[Stack], results: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per (stack, slice): phase, frame, series, order, position_mm, level, the five probabilities, and
    the file, frame in the file and windowed 8-bit image it came from."""
    rows = []
    for s, (levels, probs) in zip(stacks, results):
        for k, r in enumerate(s.rows.itertuples()):
            rows.append({"subject": r.subject, "phase": s.phase, "frame": s.frame, "series": r.series,
                         "order": int(r.order), "position_mm": round(float(r.position_mm), 2),
                         "level": CLASSES[levels[k]], **{f"p_{c}": round(float(probs[k, i]), 6)
                                                         for i, c in enumerate(CLASSES)}, "path": r.path,
                         "file_frame": int(r.file_frame), "image": s.windowed[k]})
    return pd.DataFrame(rows)


def predict_folder(folder: str | Path, model: LoadedModel, frames: str = "ed-es",
                   how: str | None = None) -> pd.DataFrame:
    """One subject's levels (stack_table). Every preprocessing choice (window, ED/ES frames, image size) is the
    one the model was trained with."""
    stacks = prepare_stacks(folder, preprocessing(model.info), frames)
    return stack_table(stacks, infer_stacks(model, stacks, how or default_decoding(model.info)))


def run(folder: str | Path, model_path: str | Path, out: str | Path, frames: str = "ed-es", how: str | None = None,
        backbone_model: str | Path | None = None, figures: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Load, predict, write OUT/levels.csv, OUT/coverage.csv (does each stack reach beyond the apex and the
    base), OUT/aha.csv (each slice's AHA 17-segment region) and a Figure-3-style PNG per stack marked with the
    AHA regions; (levels table, coverage table, seconds per subject)."""
    io.check_output_dir(out)
    model = load_model(model_path, backbone_model)
    how = how or default_decoding(model.info)
    if how == runs.DECODING and model.info.get("kind") != "cavity":
        raise PredictError(f"--decode {how} is the real-heart model's; {model_path} decodes argmax or ordered")
    t0 = time.perf_counter()
    table = predict_folder(folder, model, frames, how)
    seconds = time.perf_counter() - t0
    levels, cover = write_outputs(table, model.info, how, out, figures)
    return levels, cover, seconds


def write_outputs(table: pd.DataFrame, info: dict, how: str, out: str | Path,
                  figures: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """OUT/levels.csv, OUT/coverage.csv, OUT/aha.csv and (``figures``) a Figure-3-style PNG per stack marked with
    the AHA regions, from one subject's stack_table; (levels table, coverage table)."""
    from saxlevel.evaluation import figures as figs

    out = Path(out)
    levels = table.drop(columns=["path", "file_frame", "image"])
    cover = coverage.coverage_table(levels)
    aha = coverage.aha_table(levels)
    io.write_csv(out / "levels.csv", levels)
    io.write_csv(out / "coverage.csv", cover)
    io.write_csv(out / "aha.csv", aha)
    name = info.get("name") or f"{info['backbone']}-{info['head']}"
    for (phase, stack), ends in zip(table.groupby("phase", sort=False), cover.itertuples()) if figures else []:
        panel = stack.assign(true=stack.level, pred=stack.level, aha_region=aha.aha_region[stack.index].to_numpy(),
                             aha_segments=aha.aha_segments[stack.index].to_numpy(),
                             path=[_png_of(r.path, r.file_frame, r.image, out / "images") for r in stack.itertuples()])
        reach = ", ".join(f"{end} {'covered' if getattr(ends, end + '_covered') else 'NOT covered'}"
                          for end in coverage.ENDS)
        figs.stack_panels(panel, f"subject {stack.subject.iloc[0]} {phase} (frame {stack.frame.iloc[0]}), "
                          f"{name} ({how}); {reach}", out / f"levels_{phase}.png", show_truth=False)
    return levels, cover


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
