"""Cross-domain evaluation: models trained on one source scored on another (the paper's "external validation").

- models trained on the phantom, on the test split of a NIfTI run (e.g. ACDC), whose labels came from the
  expert segmentations (``rows_from_split``);
- models trained on ACDC, on a DICOM study with expert contours (the Sunnybrook study), whose levels come from
  the contours by the same rule as the segmentations (``contour_levels``: a slice has LV cavity at a phase
  when the expert drew an endocardial contour on it).

Every model sees the images exactly as its training did: its own window (from the model record) for DICOM
input, the PNGs of the run for NIfTI input, its own image size and extractor; frozen heads share one feature
pass per extractor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from saxlevel import CLASSES
from saxlevel.evaluation import table5
from saxlevel.ingest import images, pngs
from saxlevel.learning import backbones, features, training


def dicom_rows(index: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The labelled images of a study as split-like rows (split test), apex->base per phase."""
    rows = index.drop(columns=["phase"], errors="ignore").merge(labels, on=["subject", "series", "frame"], how="inner")
    return rows.assign(split="test").sort_values(["phase", "order"]).reset_index(drop=True)


def gray_images(rows: pd.DataFrame, size: int, window: tuple[float, float] | None) -> np.ndarray:
    """(N, size, size) uint8 model inputs: the PNGs of a run (``window`` None), or DICOM images windowed as
    the model's training did."""
    if window is None:
        return features.load_images(rows.path.tolist(), size)
    return np.stack([features.square_resize(images.window(pngs.read_image(p, k), *window), size)
                     for p, k in zip(rows.path, rows.file_frame)])


def model_predictions(model_path: Path, rows: pd.DataFrame, from_dicom: bool,
                      feature_cache: dict | None = None) -> pd.DataFrame:
    """The predictions frame (table5.predictions_frame) of one saved model on ``rows``."""
    from saxlevel import predict
    from saxlevel.learning import finetune

    model = predict.load_model(model_path)
    info = model.info
    window = tuple(info["preprocessing"]["window_percentiles"]) if from_dicom else None
    size = int(info["preprocessing"]["image_size"])
    gray = gray_images(rows, size, window)
    if model.backbone is None:  # fine-tuned: the whole network on gray images
        probs = finetune.predict(model.head, info["head"], rows, gray, int(info["max_slices"]))
    else:
        cache = feature_cache if feature_cache is not None else {}
        key = (info["feature_extractor"], size)
        if key not in cache:
            x = backbones.to_backbone_input(gray, info["backbone"])
            cache[key] = np.concatenate([np.asarray(model.backbone.predict_on_batch(x[i:i + 32]))
                                         for i in range(0, len(x), 32)])
        probs = training.predict(model.head, info["head"], rows, cache[key], int(info["max_slices"]))
    return table5.predictions_frame(rows, probs)


def score(pred: pd.DataFrame, resamples: int, seed: int) -> dict:
    """Test accuracy (subject-bootstrap CI when there are several subjects), SOTD and F1 per class, argmax."""
    res = table5.evaluate_model(pred, resamples if pred.subject.nunique() > 1 else 0, seed)["argmax"]["test"]
    out = {"accuracy": round(res["accuracy"], 3), "sotd": res["sotd"], "images": len(pred),
           "subjects": int(pred.subject.nunique()), **{f"f1_{c}": round(res["f1"][c], 3) for c in CLASSES}}
    if "ci95" in res:
        out["accuracy_ci95"] = "-".join(f"{v:.3f}" for v in res["ci95"]["accuracy"])
    return out


def model_files(models_dir: Path) -> list[Path]:
    """The paper grid's and the fine-tuned grid's model files under a run's models/ folder, by name."""
    return sorted(models_dir.glob("*.keras")) + sorted((models_dir / "finetuned").glob("*.keras"))


def baseline_predictions(train_split: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The position-only baseline fitted on ``train_split``'s train rows, predicting ``rows`` (evaluation's
    baseline, so it is scored like the models)."""
    cols = ["split", "subject", "phase", "order", "series", "frame", "label"]
    train = train_split[train_split.split == "train"][cols]
    both = pd.concat([train, rows[cols].assign(split="test", subject=rows.subject.astype(str) + " (other)")])
    pred = table5.position_baseline_predictions(both)
    return pred.assign(subject=rows.subject.to_numpy())
