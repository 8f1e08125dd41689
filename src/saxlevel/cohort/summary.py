"""cohort.csv (one row per subject) and cohort.html (the one-page summary) of a cohort run."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from saxlevel import io
from saxlevel.evaluation import coverage

COLUMNS = ["subject", "layout", "status", "message", "slices", "ed_frame", "es_frame",
           "apex_covered_ed", "apex_confidence_ed", "base_covered_ed", "base_confidence_ed",
           "apex_covered_es", "apex_confidence_es", "base_covered_es", "base_confidence_es",
           "verdict", "reason", "warnings", "model", "seconds"]
# Columns that hold timings: equal runs differ only in these.
TIMING = ("seconds",)


def ok_row(subject: str, layout: str, cover: pd.DataFrame, warnings: list[str], model: str, seconds: float) -> dict:
    """The cohort row of a subject that was predicted: its stacks' coverage per phase and the verdict with reason."""
    row: dict = {"subject": subject, "layout": layout, "status": "ok", "message": "",
                 "slices": int(cover.n_slices.max()), "warnings": " | ".join(warnings), "model": model,
                 "seconds": round(seconds, 3)}
    for r in cover.itertuples():
        phase = str(r.phase).lower()
        if phase in ("ed", "es"):
            row[f"{phase}_frame"] = int(r.frame)
            for end in coverage.ENDS:
                row[f"{end}_covered_{phase}"] = bool(getattr(r, f"{end}_covered"))
                row[f"{end}_confidence_{phase}"] = round(float(getattr(r, f"{end}_confidence")), 3)
    verdict = coverage.verdict(cover)
    row["verdict"], _, row["reason"] = verdict.partition(": ")
    return row


def error_row(subject: str, layout: str, message: str, warnings: list[str], model: str, seconds: float) -> dict:
    """The cohort row of a subject that could not be predicted: status error with the message."""
    return {"subject": subject, "layout": layout, "status": "error", "message": message, "verdict": "error",
            "warnings": " | ".join(warnings), "model": model, "seconds": round(seconds, 3)}


def cohort_table(rows: list[dict]) -> pd.DataFrame:
    """cohort.csv's table: one row per subject, the columns of COLUMNS."""
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def missing(table: pd.DataFrame, end: str) -> pd.Series:
    """Whether each ok subject's stack misses ``end`` (apex or base) in any phase."""
    cols = [c for c in (f"{end}_covered_ed", f"{end}_covered_es") if c in table]
    return (table.status == "ok") & ~table[cols].fillna(True).astype(bool).all(axis=1)


def write(table: pd.DataFrame, out: str | Path, title: str) -> tuple[Path, Path]:
    """DIR/cohort.csv and DIR/cohort.html: how many are complete, miss the apex or the base, the errors by reason,
    and the slowest and least confident subjects."""
    out = Path(out)
    io.write_csv(out / "cohort.csv", table)
    ok = table[table.status == "ok"]
    errors = table[table.status == "error"]
    counts = pd.DataFrame({"subjects": [
        len(table), int((ok.verdict == "complete").sum()), int(missing(table, "apex").sum()),
        int(missing(table, "base").sum()), len(errors)]},
        index=["in the cohort", "complete", "missing the apex", "missing the base", "errors"])
    reasons = errors.message.astype(str).str.split(":").str[0].value_counts().rename("subjects").to_frame()
    conf_cols = [c for c in table if "_confidence_" in c]
    least = ok.assign(confidence=ok[conf_cols].min(axis=1)).nsmallest(10, "confidence")
    slowest = table.nlargest(10, "seconds")
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Coverage</h2>", counts.to_html(),
             "<h2>Errors by reason</h2>", reasons.to_html() if len(reasons) else "<p>none</p>",
             "<h2>Least confident subjects</h2>",
             least[["subject", "verdict", "confidence", "reason"]].to_html(index=False),
             "<h2>Slowest subjects</h2>", slowest[["subject", "status", "slices", "seconds"]].to_html(index=False)]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>saxlevel cohort</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>" + "".join(parts) + "</body></html>")
    io.write_text(out / "cohort.html", page)
    return out / "cohort.csv", out / "cohort.html"
