"""Putting the ICT-FaceKit face model where the add-on finds it, without the ``facerig`` command.

The preferences' *Download Face Model* and *Choose Local File* buttons (``operators``) call
:func:`install_face_model`; it uses the project's own download and OBJ → npz conversion
(``facemodel.convert``, vendored in the extension zip) and writes the npz into the add-on's user
data folder (Blender's extension user directory), validated before it replaces anything.
Importable without Blender.
"""

from __future__ import annotations

import shutil
from importlib import import_module
from pathlib import Path

from .rt import facemodel

ICT_URL = "https://github.com/ICT-VGL/ICT-FaceKit"
MISSING_MODEL_HELP = ("no face model (ICT-FaceKit, MIT) yet: in Edit › Preferences › Add-ons › facerig press "
                      "Download Face Model, or Choose Local File for ICT-FaceKit's zip, folder or .npz")


def convert_module():  # noqa: ANN201 - facemodel.convert under its vendored name inside the extension
    return import_module(facemodel.__name__ + ".convert")


def needs_online_access(url: str) -> bool:
    """As Blender judges its own repositories: everything but ``file://`` goes online."""
    return not url.startswith("file://")


def install_face_model(source: str | Path, dest_dir: Path) -> Path:
    """``source`` → ``dest_dir/ict_facekit_light.npz``; returns that path.

    ``source`` is an http(s)/file:// URL of ICT-FaceKit's archive (downloaded, converted), a local
    copy of that zip or its folder (converted), or an npz converted before (validated and copied).
    Raises ``facemodel.FaceModelError`` (``ConversionError``) with a one-line reason otherwise.
    """
    convert = convert_module()
    out = Path(dest_dir) / facemodel.model.MODEL_FILENAME
    text = str(source)
    if "://" in text:
        return convert.fetch(text, out)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".npz" and path.is_file():
        facemodel.FaceModel.load(path)        # raises FaceModelError unless it is a usable ICT model
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        shutil.copyfile(path, tmp)
        tmp.replace(out)
        return out
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip"):
        return convert.convert_source(path, out)
    raise convert.ConversionError(f"{path} is not ICT-FaceKit's zip, its folder or a converted .npz"
                                  if path.exists() else f"{path} does not exist")


__all__ = ["ICT_URL", "MISSING_MODEL_HELP", "convert_module", "install_face_model", "needs_online_access"]
