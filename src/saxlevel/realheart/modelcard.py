"""The real-heart model's card (src/saxlevel/shipped/MODEL_CARD.md), written from the model's own record.

Every number in it comes from the validation metrics the pipeline wrote (realheart/metrics/validation.json),
stored in the model file's saxlevel.json: nothing is typed by hand.
"""

from __future__ import annotations

from typing import Any

from saxlevel.realheart import runs

# Published anchors for LV coverage detection (the issue's): dedicated 3-D CNNs on UK Biobank.
ANCHORS = [
    ("Zhang et al. 2018 (UK Biobank, 3-D CNN)", "4.6 % apex / 4.9 % base errors"),
    ("Nabavi et al. 2022", "95.7 % / 96.9 % accuracy"),
]
TERMS = {
    "acdc": "ACDC (Bernard et al., IEEE TMI 2018): research, non-commercial use only",
    "mnms": "M&Ms (Campello et al., IEEE TMI 2021): research use under the challenge's terms (non-commercial)",
    "sunnybrook": "Sunnybrook Cardiac Data (Radau et al. 2009): public domain (CC0 1.0)",
}


def _acc(block: dict) -> str:
    ci = block.get("ci95")
    return f"{block['accuracy']:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def results_table(summary: dict) -> list[str]:
    """Markdown rows: per source, level accuracy with 95 % interval beside position alone, and coverage ends."""
    lines = ["| held-out source | subjects | images | level accuracy (95 % CI) | position only | stack ends right "
             "(intact + cut) |", "|---|---|---|---|---|---|"]
    for source, r in summary.items():
        lv = r["levels"]
        pos = r.get("position_only")
        lines.append(f"| {source} | {lv['subjects']} | {lv['images']} | {_acc(lv)} | {_acc(pos) if pos else '-'} | "
                     f"{r['ends']['right']:.3f} of {r['ends']['ends']} ({r['ends']['stacks_intact']} intact, "
                     f"{r['ends']['stacks_cut']} cut stacks) |")
    return lines


def summary_lines(metrics: dict) -> str:
    """The validation summary as printed by the stage."""
    return "\n".join(["realheart validate:", *results_table(metrics["summary"])])


def render(info: dict[str, Any]) -> str:
    """The model card of a real-heart model from its saxlevel.json."""
    val = info["validation"]
    src = info["sources"]
    names = sorted(set(src["nifti"]) | set(src["contours"]))
    data = [f"- **{n}**: {src['by_source'].get(n, 0)} stacks (ED and ES); {TERMS.get(n, 'see the source')}"
            for n in names]
    net = info["settings"]
    held = ", ".join(f"{s}: {len(v)}" for s, v in val["held_out"].items())
    return "\n".join([
        "# saxlevel real-heart model: slice levels and LV coverage",
        "",
        "**Not for clinical use.** A research tool: it labels cine short-axis slices for research pipelines "
        "(quality control, AHA segment assignment, dataset curation); no diagnosis or treatment decision may rest "
        "on it.",
        "",
        "## What it does",
        f"- Level definition: **{info['level_definition']}**: the slices holding LV cavity, from the most apical to "
        "the most basal, split into apical, mid and basal thirds of equal thickness (AHA 17-segment model, "
        "Cerqueira et al. 2002; the rule ukbb_cardiac uses); slices beyond them are out-of-apical (oap) and "
        "out-of-basal (obs). This is not the paper's papillary-muscle rule (Ho & Kim 2022, section 2.2), which "
        "the phantom-trained models of the paper's grid follow.",
        f"- Decoding: **{info['decoding']}**: a 2.5-D U-Net marks the LV cavity on each slice (the slice and its two "
        "neighbours as input), a logistic calibration turns each slice's cavity map into the probability that it "
        "holds LV cavity, and the LV is taken as the most likely single run of consecutive slices; so levels never "
        "go backwards from apex to base, and the end slices' probability of lying beyond the LV is the coverage "
        "confidence.",
        f"- Input: any SAX cine saxlevel reads (Kaggle DSB2, clinical DICOM exports, NIfTI datasets); ED and ES "
        f"as saxlevel finds them; each slice windowed ({info['input']['window_percentiles']} percentiles), resampled "
        f"to {info['input']['pixel_mm']} mm pixels, {info['input']['size']} x {info['input']['size']}.",
        "",
        "## Training data and terms",
        *data,
        "",
        "Because ACDC and M&Ms are licensed for non-commercial research only, **these weights are for "
        "non-commercial research use only**.",
        "",
        f"Network: U-Net, {net['base_filters']} filters doubling over {net['depth']} levels, {net['epochs']} epochs, "
        f"batch {net['batch_size']}, Adam {net['lr']}, augmentation {'on' if net['augment'] else 'off'} (flips, "
        "quarter turns, zoom 0.8-1.25, shifts, gamma, contrast, noise), seed "
        f"{net['seed']}. Loss: binary cross-entropy + soft Dice on the expert's LV-cavity pixels"
        + (f", + {net['slice_loss']} x a per-slice cross-entropy of whether the slice holds LV cavity"
           if net.get("slice_loss") else "")
        + ("; a second output marks the LV myocardium (same loss, where the source segments it), and the share of "
           "the cavity it rings is a presence feature" if net.get("myocardium") else "")
        + (f"; each neighbour channel shown as a stack's end with chance {net['end_dropout']} in training"
           if net.get("end_dropout") else "")
        + (f"; slices without LV cavity shown {net['beyond_repeat']} times an epoch"
           if net.get("beyond_repeat", 1) > 1 else "")
        + ("; " + ", ".join(f"{k}'s slices {v} times" for k, v in net["repeat_sources"].items()) + " an epoch"
           if net.get("repeat_sources") else "")
        + ("; at inference the maps are averaged over the image and its three flips" if net.get("flips") else "")
        + ". Presence features: " + ", ".join(runs.feature_names(info["calibration"])) + ".",
        "",
        "## Measured accuracy (validation)",
        f"The same recipe, scored on patients it never saw (held out: {held}): they are dealt into "
        f"{val.get('folds', 2)} folds and each fold is scored by a model trained on everything else (the "
        f"{val['development_stacks']} development stacks and the other folds). Each held-out stack is scored intact and cut "
        "short at either end (every slice beyond the LV at that end and the first LV slice removed), so covered and "
        "missing ends are both judged. Each held-out subject's presence calibration was fitted on the other held-out "
        "subjects only. Intervals: subject-level bootstrap, 95 %.",
        "",
        *results_table(val["summary"]),
        "",
        "Position only: the level from the slice's relative position in its stack alone (logistic regression fitted "
        "on the development ACDC stacks). Published anchors for coverage detection: "
        + "; ".join(f"{a}: {b}" for a, b in ANCHORS) + ".",
        "",
        "## Intended use and limits",
        "- Research: level and LV-coverage QC of cine SAX stacks, AHA slice assignment, curation of research data.",
        "- Validated on the sources above only; other vendors, field strengths, pathologies and children may differ. "
        "Check a sample of its output on your own data (`saxlevel label --predictions OUT/levels.csv` pre-fills the "
        "labeler with its levels).",
        "- The levels follow from where the model finds LV cavity: a stack with motion artefacts or an unusual "
        "orientation can shift the ends, and with them the thirds.",
        "",
        "Reproduce: `dvc repro realheart/dvc.yaml` (needs the data named in realheart/params.yaml).",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    """Print the validation table of a metrics file: python -m saxlevel.realheart.modelcard realheart/metrics/validation.json"""
    import json
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "realheart/metrics/validation.json")
    print(summary_lines(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
