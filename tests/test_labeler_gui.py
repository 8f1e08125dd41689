"""The labeler in a real Tk window (TkAgg) on a virtual X screen (Xvfb): real Tk key and mouse events change
a label, the CSV on disk after saving matches what the window shows, and a screenshot is taken.

CI installs Xvfb (.ci/run); where it cannot be installed this test is skipped, saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saxlevel import params as P
from saxlevel import sources
from saxlevel.ingest import pngs

from conftest import REPO

SCRIPT = r'''
import json, sys
import matplotlib
matplotlib.use("TkAgg")
import matplotlib.pyplot as plt
import pandas as pd
from PIL import ImageGrab
from saxlevel import labeler

index, labels, shot = sys.argv[1], sys.argv[2], sys.argv[3]
lab = labeler.Labeler(pd.read_csv(index), labels, user="gui")
widget = lab.fig.canvas.get_tk_widget()
root = widget.winfo_toplevel()
plt.show(block=False)
for _ in range(20):
    root.update()
lab.fig.canvas.draw()
root.update()

def press(keysym):
    widget.event_generate("<KeyPress>", keysym=keysym, when="now")
    widget.event_generate("<KeyRelease>", keysym=keysym, when="now")
    root.update()

def click(phase, j):
    ax = lab.panels[(phase, j)]["ax"]
    x, y = ax.transAxes.transform((0.5, 0.5))
    ratio = getattr(lab.fig.canvas, "device_pixel_ratio", 1) or 1
    tx, ty = int(x / ratio), int(widget.winfo_height() - y / ratio)
    widget.event_generate("<Motion>", x=tx, y=ty, when="now")
    widget.event_generate("<ButtonPress-1>", x=tx, y=ty, when="now")
    widget.event_generate("<ButtonRelease-1>", x=tx, y=ty, when="now")
    root.update()

widget.focus_force()
root.update()
press("3")             # class mid
click("ED", 2)         # label ED slice 2
press("5")
click("ES", 1)
press("space")         # save
for _ in range(10):
    root.update()
ImageGrab.grab(xdisplay=None).save(shot)
shown = {f"{ph}:{j}": p["label"].get_text() for (ph, j), p in lab.panels.items() if p["ax"].get_visible()}
keys = {f"{ph}:{j}": list(k) for ph in labeler.session.PHASES for j, k in enumerate(lab.row_keys(ph))}
print(json.dumps({"shown": shown, "keys": keys, "status": lab.status(),
                  "size": [root.winfo_width(), root.winfo_height()]}))
plt.close("all")
'''


@pytest.fixture()
def display():
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (.ci/run installs it with apt-get)")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("this Python has no tkinter")
    number = 90 + os.getpid() % 9
    proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1600x900x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{number}")
    for _ in range(100):
        if socket.exists():
            break
        time.sleep(0.05)
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


def test_labeler_window_keys_click_save_screenshot(display: str, phantom_dir: Path, tmp_path: Path) -> None:
    # One phantom subject through filter_dicom and to_png: the window opens on real PNG stacks.
    index, _, _ = sources.index_root(phantom_dir, progress=False)
    sid = sorted(index.subject.unique())[0]
    cfg = P.png_settings(P.load(REPO / "params.yaml"), jobs=1)
    result = pngs.write_pngs(index[index.subject == sid], tmp_path / "png", cfg, progress=False)
    result.index.to_csv(tmp_path / "index.csv", index=False)
    script = tmp_path / "gui.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, DISPLAY=display, MPLBACKEND="TkAgg", PYTHONPATH=str(REPO / "src"))
    labels, shot = tmp_path / "labels.csv", tmp_path / "screen.png"
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "index.csv"), str(labels), str(shot)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shown"]["ED:2"].endswith("MID") and out["shown"]["ES:1"].endswith("OBS"), out["shown"]
    assert "all saved" in out["status"]
    # The CSV on disk is what the window shows: every labelled panel, and only those.
    saved = {(int(r["subject"]), str(r["series"]), int(r["frame"])): r["label"]
             for r in __import__("pandas").read_csv(labels).to_dict("records")}
    on_screen = {tuple(out["keys"][slot]): text.split(": ")[1].split(" ")[0].lower()
                 for slot, text in out["shown"].items() if not text.split(": ")[1].startswith("--")}
    assert saved == on_screen and len(saved) == 2
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1600, 900)
        assert len(im.convert("L").getcolors(1_000_000) or []) > 50  # a drawn window, not a blank screen
