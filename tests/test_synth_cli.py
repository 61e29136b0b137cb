"""``facerig synth`` argument checking: bad input fails fast with one clear line (no Blender)."""

from __future__ import annotations

import pytest

from facerig_cli.main import main


@pytest.mark.parametrize("extra, message", [
    (["--count", "-5"], "--count: must be 1…100000000, got -5"),
    (["--count", "0"], "--count: must be 1…100000000"),
    (["--count", "99999999999999"], "--count: must be 1…100000000"),
    (["--count", "1e10"], "--count: must be an integer"),
    (["--size", "8"], "--size: must be 32…1024"),
    (["--workers", "0"], "--workers: must be 1…256"),
    (["--yaw-max", "120"], "--yaw-max"),
    (["--shard-size", "0"], "--shard-size"),
    (["--supersample", "9"], "--supersample"),
    (["--workbench-aa", "99"], "--workbench-aa"),
])
def test_bad_values_rejected(tmp_path, capsys, extra, message):
    args = ["synth", "render", "--count", "4", "--out", str(tmp_path / "c")]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_unknown_engine_rejected(tmp_path, capsys):
    assert main(["synth", "render", "--count", "4", "--out", str(tmp_path / "c"), "--engine", "eevee"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'eevee'" in err and err.count("\n") == 1


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "corpus"
    f.write_text("not a directory")
    assert main(["synth", "render", "--count", "4", "--out", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_missing_backgrounds_folder(tmp_path, capsys):
    assert main(["synth", "render", "--count", "4", "--out", str(tmp_path / "c"),
                 "--backgrounds", str(tmp_path / "none")]) == 2
    assert "backgrounds folder not found" in capsys.readouterr().err


def test_preview_and_info_of_non_corpus(tmp_path, capsys):
    assert main(["synth", "preview", str(tmp_path)]) == 2
    assert "not a facerig corpus" in capsys.readouterr().err
    assert main(["synth", "info", str(tmp_path / "x")]) == 2
    assert "corpus not found" in capsys.readouterr().err


def test_every_package_error_is_one_line_and_bugs_are_not():
    """Errors of corpora, renders, reconstructions and photo corpora reach the user as one line
    from ``main`` itself (no per-command wrappers); a plain RuntimeError is a bug and is raised."""
    from facemodel import FaceModelError, LayoutError
    from facerig_cli.errors import CommandError
    from facerig_cli.main import is_user_error
    from learner.photo_corpus import PhotoCorpusError
    from synth.corpus import CorpusError
    from synth.render import RenderError
    from synth.views import ReconstructionError

    for cls in (CommandError, FaceModelError, LayoutError, CorpusError, RenderError, ReconstructionError,
                PhotoCorpusError, FileNotFoundError, ValueError):
        assert is_user_error(cls("bad input")), cls
    assert not is_user_error(RuntimeError("a bug"))
    assert not is_user_error(KeyError("a bug"))
