"""Build .dvc/plots_template.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined, so that
`dvc plots show` draws every plot offline (DVC's own page loads them from a CDN).

Run once when DVC's pinned script versions change (needs npm and the npm registry):

    python tools/make_plots_template.py

The versions are the ones dvc-render's VegaRenderer.SCRIPTS loads (vega 5.20.2, vega-lite 5.2.0,
vega-embed 6.18.2; all BSD-3-Clause, copyright the Vega project / University of Washington Interactive
Data Lab)."""

from __future__ import annotations

import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from dvc_render.vega import VegaRenderer

REPO = Path(__file__).resolve().parents[1]
BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {credits} -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main() -> None:
    pinned = dict(re.findall(r"npm/([a-z-]+)@([\d.]+)", VegaRenderer.SCRIPTS))
    scripts, credits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for package, member in BUILDS.items():
            spec = f"{package}@{pinned[package]}"
            name = subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmp, check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(Path(tmp) / name) as tar:
                js = tar.extractfile(f"package/{member}").read().decode("utf-8")
            if "</script" in js:
                raise SystemExit(f"{spec}: cannot be inlined (contains </script)")
            scripts.append(f"    <script>/* {spec} ({member}), BSD-3-Clause */\n{js}\n    </script>")
            credits.append(spec)
    out = REPO / ".dvc" / "plots_template.html"
    out.write_text(PAGE.format(credits="inlined for offline use: " + ", ".join(credits) + " (BSD-3-Clause)",
                               scripts="\n".join(scripts)), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB): {', '.join(credits)}")


if __name__ == "__main__":
    main()
