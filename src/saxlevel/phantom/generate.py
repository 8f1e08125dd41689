"""Build a synthetic Kaggle-DSB2-layout cine SAX DICOM tree with exact labels and defects.

Layout: OUT/{train,validate,test}/{same}/<id>/study/{sax_N,2ch_N,4ch_N}/IM-<series>-<frame>.dcm,
ids numbered per split as on Kaggle (train first); format ``clinical`` writes OUT/PH<id>/1.dcm ... instead, one
folder per subject as a clinic exports it (dicomio.to_clinical), and ``nifti`` OUT/training/patient<id>/ as ACDC
ships its patients (niftiio: ED and ES volumes with segmentations). OUT/labels.csv holds the ED and ES label of
every SAX slice, OUT/truth.json the generator parameters and each subject's exact ground truth.

Each subject's plan comes from ``plan``; this module renders and writes it.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from saxlevel.io import write_csv, write_json
from saxlevel.phantom import anatomy, dicomio, geometry, niftiio
from saxlevel.phantom.plan import (
    KAGGLE_SPLITS,
    MNMS2_DEFECTS,
    NIFTI_FORMATS,
    PhantomParams,
    assign_defects,
    assign_truncation,
    frame_phase,
    plan_subject,
    split_of_ids,
)


def _image(heart, phi, plane, lv, thickness, look, rng) -> np.ndarray:
    """Render one 12-bit magnitude image: partial volume over the slice thickness, coil bias, Rician noise."""
    acc = np.zeros((plane.rows, plane.cols))
    for t in (-thickness / 3, 0.0, thickness / 3):
        u, v, z = plane.lv_coords(lv, t)
        acc += anatomy.render(heart, phi, u, v, z)
    img = gaussian_filter(acc / 3.0, sigma=0.7 * 1.4 / plane.spacing)
    u, v, _ = plane.lv_coords(lv)
    bias = 1.0 + look["bias"] * np.clip(v / 150.0, -1, 1) + 0.12 * np.sin(u / 70.0 + look["bias_phase"])
    sig = img * bias * look["myo_level"]
    noise = look["noise"] * look["myo_level"]
    mag = np.hypot(sig + rng.normal(0, noise, sig.shape), rng.normal(0, noise, sig.shape))
    return np.clip(np.round(mag), 0, 4095).astype(np.uint16)


def make_subject(sid: int, split: str, defects: list[str], params: PhantomParams, out: Path,
                 truncate: str = "") -> dict:
    """Write one subject's study folder; return its truth entry and labels."""
    if params.format in NIFTI_FORMATS:
        return make_subject_nifti(sid, split, defects, params, out, truncate)
    p = plan_subject(sid, defects, params, truncate)
    heart, lv, planes, look, patient = p["heart"], p["lv"], p["planes"], p["look"], p["patient"]
    ed, es, F, n, thickness, spacing = p["ed"], p["es"], params.frames, p["n"], p["thickness"], p["spacing"]
    sax_numbers, numbers, black = p["sax_numbers"], p["numbers"], p["black"]
    dup_k, dup_second_series, short_k = p["dup_k"], p["dup_second_series"], p["short_k"]
    short_frames, missing_k, rows, cols = p["short_frames"], p["missing_k"], p["rows"], p["cols"]
    sl_sign, sl_offset = p["sl_sign"], p["sl_offset"]
    rng = np.random.default_rng([params.seed, sid, 1])  # image noise only
    study = out / split / split / str(sid) / "study"
    apex_to_base = [f"sax_{x}" for x in sax_numbers]
    for k in range(n):
        name = apex_to_base[k]
        if k == missing_k:
            continue
        folder = study / name
        frames = range(1, (short_frames if k == short_k else F) + 1)
        for frame in frames:
            phi = frame_phase(frame, ed, es, F)
            img = _image(heart, phi, planes[k], lv, thickness, look, rng)
            if black:
                img[:] = 0
            common = dict(plane=planes[k], frame=frame, frames=F, thickness=thickness,
                          slice_location=sl_sign * (float(planes[k].ipp @ planes[k].normal) - sl_offset),
                          description="sax")
            series = sax_numbers[k]
            if k in p["late_numbers"]:
                again = p["late_numbers"][k]  # e.g. sax_38 and sax_57 after sax_5-sax_18
                rimg = _image(heart, phi, planes[k], lv, thickness, look, rng)
                dicomio.write_image(study / f"sax_{again}" / f"IM-{again:04d}-{frame:04d}.dcm", patient, rimg,
                                    series=again, acquisition=1, **common)
            if k == dup_k and not dup_second_series:
                # Repeated acquisition at the same place: IM-<series>-<frame>-<k>.dcm
                for rep in (1, 2):
                    rimg = img if rep == 2 else _image(heart, phi, planes[k], lv, thickness, look, rng)
                    dicomio.write_image(folder / f"IM-{series:04d}-{frame:04d}-{rep:04d}.dcm", patient,
                                        rimg, series=series, acquisition=rep, **common)
            else:
                dicomio.write_image(folder / f"IM-{series:04d}-{frame:04d}.dcm", patient, img,
                                    series=series, acquisition=1, **common)
                if k == dup_k:
                    # A second series stored in the same folder (same slice, same frames).
                    s2 = 100 + series
                    rimg = _image(heart, phi, planes[k], lv, thickness, look, rng)
                    dicomio.write_image(folder / f"IM-{s2:04d}-{frame:04d}.dcm", patient, rimg,
                                        series=s2, acquisition=2, **common)

    # Long-axis distractors (2ch, 4ch): the pipeline must ignore them.
    mid = lv.origin - 0.45 * heart.cavity_length * lv.d
    for kind, inplane in (("2ch", lv.e2), ("4ch", lv.e1)):
        plane = geometry.plane_through(mid, inplane, -lv.d, spacing, rows, cols)
        for frame in range(1, F + 1):
            img = _image(heart, frame_phase(frame, ed, es, F), plane, lv, thickness, look, rng)
            if black:
                img[:] = 0
            dicomio.write_image(
                study / f"{kind}_{numbers[kind]}" / f"IM-{numbers[kind]:04d}-{frame:04d}.dcm", patient, img,
                plane=plane, frame=frame, frames=F, thickness=thickness, series=numbers[kind], acquisition=1,
                slice_location=float(plane.ipp @ plane.normal), description=kind,
            )

    kept = apex_to_base if missing_k < 0 else [s for k, s in enumerate(apex_to_base) if k != missing_k]
    labels = p["labels"]
    subject: int | str = sid
    if params.format == "clinical":
        subject = clinical_id(sid)
        names = dicomio.to_clinical(study, out / subject, kept, params.transfer_syntax)
        shutil.rmtree(study.parent)
        labels = [{**r, "subject": subject, "series": names[r["series"]]} for r in labels if r["series"] in names]
        kept = [names[s] for s in kept]
    elif params.format != "classic" or params.transfer_syntax != "explicit":
        dicomio.export_study(study, params.format, params.transfer_syntax)
    truth = {
        "split": split,
        "ed_frame": ed,
        "es_frame": es,
        "apex_to_base": kept,
        "defects": defects,
        "edv_ml": round(anatomy.cavity_volume_ml(heart, 0.0), 2),
        "esv_ml": round(anatomy.cavity_volume_ml(heart, 1.0), 2),
        "slice_step_mm": round(p["step"], 3),
        "transposed": bool(np.dot(np.cross(planes[0].row, planes[0].col), lv.d) < 0),
    }
    if p["truncated"]:
        truth["truncated"] = p["truncated"]
    if p["late_numbers"]:  # the re-acquired slices: {first folder: the later one}
        truth["late_repeats"] = {apex_to_base[k]: f"sax_{x}" for k, x in p["late_numbers"].items()}
    return {"sid": sid, "subject": subject, "truth": truth, "labels": labels}


def make_subject_nifti(sid: int, split: str, defects: list[str], params: PhantomParams, out: Path,
                       truncate: str = "") -> dict:
    """Write one subject as ACDC ships it (niftiio): its ED and ES volumes with segmentations. A volume cannot
    repeat, shorten or skip a slice, so of the defects only ``black`` applies (all-zero images)."""
    p = plan_subject(sid, defects, params, truncate)
    heart, lv, planes, look, n, thickness = p["heart"], p["lv"], p["planes"], p["look"], p["n"], p["thickness"]
    rng = np.random.default_rng([params.seed, sid, 1])  # image noise only
    frames = {}
    for frame, phi in ((p["ed"], 0.0), (p["es"], 1.0)):
        image = np.stack([_image(heart, phi, planes[k], lv, thickness, look, rng) for k in range(n)], axis=-1)
        if p["black"]:
            image[:] = 0
        seg = np.stack([anatomy.segment(heart, phi, *planes[k].lv_coords(lv)) for k in range(n)], axis=-1)
        frames[frame] = (image, seg)
    subject = nifti_id(sid)
    if params.format == "mnms2":
        cine = np.stack([np.stack([_image(heart, frame_phase(f, p["ed"], p["es"], params.frames), planes[k], lv,
                                          thickness, look, rng) for k in range(n)], axis=-1)
                         for f in range(1, params.frames + 1)], axis=-1)
        mid = lv.origin - 0.45 * heart.cavity_length * lv.d
        la_plane = geometry.plane_through(mid, lv.e1, -lv.d, p["spacing"], p["rows"], p["cols"])
        la = {ph: (_image(heart, phi, la_plane, lv, thickness, look, rng)[..., None],
                   anatomy.segment(heart, phi, *la_plane.lv_coords(lv))[..., None]) for ph, phi in (("ED", 0.0),
                                                                                                  ("ES", 1.0))}
        niftiio.write_mnms2_subject(out / "Training" / subject, subject, frames[p["ed"]], frames[p["es"]], cine,
                                    la, niftiio.affine(planes), niftiio.affine([la_plane]),
                                    [d for d in defects if d in MNMS2_DEFECTS])
    else:
        niftiio.write_acdc_subject(out / "training" / subject, subject, frames, p["ed"], p["es"],
                                   niftiio.affine(planes))
    names = {f"sax_{x}": f"slice_{k}" for k, x in enumerate(p["sax_numbers"])}  # slice_K: apex first
    labels = [{**r, "subject": subject, "series": names[r["series"]]} for r in p["labels"]]
    truth = {"split": split, "ed_frame": p["ed"], "es_frame": p["es"], "apex_to_base": list(names.values()),
             "defects": [d for d in defects if d == "black" or d in MNMS2_DEFECTS],
             "edv_ml": round(anatomy.cavity_volume_ml(heart, 0.0), 2),
             "esv_ml": round(anatomy.cavity_volume_ml(heart, 1.0), 2), "slice_step_mm": round(p["step"], 3),
             "transposed": bool(np.dot(np.cross(planes[0].row, planes[0].col), lv.d) < 0)}
    if p["truncated"]:
        truth["truncated"] = p["truncated"]
    return {"sid": sid, "subject": subject, "truth": truth, "labels": labels}


def nifti_id(sid: int) -> str:
    """The folder name (and subject id) of subject ``sid`` in the NIfTI form, ACDC-style: patient0001, ..."""
    return f"patient{sid:04d}"


def clinical_id(sid: int) -> str:
    """The folder name (and subject id) of subject ``sid`` in the clinical form: PH0001, ... (not a number)."""
    return f"PH{sid:04d}"


def _make_subject_star(args: tuple) -> dict:
    return make_subject(*args)


def make_phantom(out: str | Path, params: PhantomParams, progress: bool = True) -> dict:
    """Build the whole phantom tree at ``out`` (written to a temp folder, then renamed)."""
    params.validate()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    defects, cut = assign_defects(params), assign_truncation(params)
    tasks = [(sid, split, defects.get(sid, []), params, tmp, cut.get(sid, "")) for sid, split in
             split_of_ids(params.subjects)]
    jobs = max(1, min(params.jobs, os.cpu_count() or 1))
    if jobs == 1:
        results = [make_subject(*t) for t in tqdm(tasks, desc="phantom", unit="subject", disable=not progress)]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(tqdm(pool.map(_make_subject_star, tasks), total=len(tasks), desc="phantom",
                                unit="subject", disable=not progress))
    results.sort(key=lambda r: r["sid"])
    truth = {"params": asdict(params) | {"jobs": None}, "subjects": {str(r["subject"]): r["truth"] for r in results}}
    truth["params"].pop("jobs")
    for key, default in (("format", "classic"), ("transfer_syntax", "explicit")):
        if truth["params"][key] == default:  # the Kaggle form: truth.json as before these options existed
            truth["params"].pop(key)
    if not any(params.truncated.values()):  # no stack cut short: as before that option existed
        truth["params"].pop("truncated")
    write_json(tmp / "truth.json", truth)
    write_csv(tmp / "labels.csv", pd.DataFrame([row for r in results for row in r["labels"]]))
    for split in ("train", "validate"):
        vols = [{"Id": r["subject"], "Systole": r["truth"]["esv_ml"], "Diastole": r["truth"]["edv_ml"]}
                for r in results if r["truth"]["split"] == split]
        write_csv(tmp / f"{split}.csv", pd.DataFrame(vols, columns=["Id", "Systole", "Diastole"]))
    if params.format in ("clinical", *NIFTI_FORMATS):  # the Kaggle split folders the subjects were first written to
        for split, _ in KAGGLE_SPLITS:
            shutil.rmtree(tmp / split, ignore_errors=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return truth
