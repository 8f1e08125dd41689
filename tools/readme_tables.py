"""Print the README's Table 5 and comparison tables (markdown) from an evaluate run's plots/ folder.

    python tools/readme_tables.py [--plots plots] [--claims 'A vs B' ...]

The README's result tables are this script's output for the committed run, so they never drift from the
numbers in plots/table5.csv and plots/claims.csv."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from saxlevel import catalog


def table5(plots: Path) -> str:
    """Table 5 rows (argmax decoding, with the ordered-decoding accuracy and SOTD beside) as markdown."""
    t = pd.read_csv(plots / "table5.csv")
    arg, ordered = t[t.decode == "argmax"], t[t.decode == "ordered"].set_index("model")
    head = ("| backbone | head | weights | trained | F1 oap | F1 ap | F1 mid | F1 bs | F1 obs | AUC | accuracy (95 % CI) "
            "| SOTD | accuracy, ordered decoding | SOTD, ordered |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in arg.itertuples():
        trained = "frozen" if r.finetune == "none" and not r.augment else \
            f"fine-tuned ({r.finetune})" + (" + aug." if r.augment else "")
        o = ordered.loc[r.model]
        weights = getattr(r, "weights", "none")
        lines.append(f"| {catalog.display(r.backbone)} | {catalog.display(r.head) if r.head != 'dense' else 'CNN (dense)'} "
                     f"| {'ImageNet' if weights == 'imagenet' else 'random' if weights == 'none' else weights} "
                     f"| {trained} | {r.f1_oap:.3f} | {r.f1_ap:.3f} | {r.f1_mid:.3f} | {r.f1_bs:.3f} | {r.f1_obs:.3f} "
                     f"| {r.auc_weighted:.3f} | {r.accuracy:.3f} ({r.accuracy_ci95.replace('-', '–')}) | {r.sotd} "
                     f"| {o.accuracy:.3f} | {o.sotd} |")
    return "\n".join(lines)


def claims(plots: Path, pairs: list[str]) -> str:
    """Paired comparisons (argmax) as markdown, in the order asked."""
    c = pd.read_csv(plots / "claims.csv")
    c = c[c.decode == "argmax"].assign(pair=lambda d: d.model_a + " vs " + d.model_b).set_index("pair")
    lines = ["| comparison (test accuracy, argmax) | A | B | A − B (95 % CI) | p |", "|---|---|---|---|---|"]
    for pair in pairs:
        r = c.loc[pair]
        lo, hi = re.fullmatch(r"(-?[\d.]+)-(-?[\d.]+)", r.diff_ci95).groups()  # type: ignore[union-attr]
        p = "< 0.001" if r.p_value < 0.001 else f"{r.p_value:.3f}"
        lines.append(f"| {pair} | {r.accuracy_a:.3f} | {r.accuracy_b:.3f} | {r.accuracy_diff:+.3f} ({lo}–{hi}) | {p} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plots", default="plots")
    ap.add_argument("--claims", nargs="*", default=[])
    args = ap.parse_args()
    print(table5(Path(args.plots)))
    if args.claims:
        print()
        print(claims(Path(args.plots), args.claims))


if __name__ == "__main__":
    main()
