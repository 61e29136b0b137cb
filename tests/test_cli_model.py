"""The `facerig` command as a user runs it: help, model info, preview, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FACERIG = [sys.executable, "-m", "facerig_cli.main"]


def run(*args, **kw):
    return subprocess.run(FACERIG + list(args), capture_output=True, text=True, timeout=300, **kw)


def test_help_lists_the_subcommands():
    out = run("--help")
    assert out.returncode == 0
    assert "model" in out.stdout


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "facerig"
    assert exe.is_file(), "pip install -e . must create .venv/bin/facerig"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "model" in out.stdout


def test_model_info(model_path):
    out = run("model", "info", "--json", "--model", str(model_path))
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["vertices"] == 26719 and info["identity_modes"] == 100 and info["expressions"] == 53
    assert "MIT" in info["licence"]
    text = run("model", "info")  # from $FACERIG_FACE_MODEL set by conftest
    assert text.returncode == 0 and "26719" in text.stdout


def test_model_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("garbage")
    out = run("model", "info", "--model", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().startswith("facerig: error:") and "Traceback" not in out.stderr


def test_model_preview_writes_a_contact_sheet(tmp_path):
    import imageio.v3 as iio

    out = run("model", "preview", "-n", "4", "-o", str(tmp_path / "sheet.png"))
    assert out.returncode == 0, out.stderr
    img = iio.imread(tmp_path / "sheet.png")
    assert img.shape == (192, 4 * 3 * 192, 3)
    assert img.std() > 20  # faces, not a blank sheet


def test_model_harmonics_caches_the_basis_and_draws_the_contact_sheet(tmp_path):
    import imageio.v3 as iio

    out = run("model", "harmonics", "--sheet", str(tmp_path / "sheet.png"))
    assert out.returncode == 0, out.stderr
    assert "20 harmonics of 9409 face-region vertices" in out.stdout
    cached = Path(out.stdout.split("cached at ")[1].split()[0])
    assert cached.is_file() and cached.name.startswith("harmonics-")
    sheet = iio.imread(tmp_path / "sheet.png")
    assert sheet.shape[:2] == (4 * 160, 6 * 160) and sheet.std() > 20
