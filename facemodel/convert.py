"""Build the npz face model from ICT-FaceKit's OBJ files (folder, zip archive, or download).

ICT-FaceKit (github.com/ICT-VGL/ICT-FaceKit, MIT licence) ships its model as OBJ files in
``FaceXModel/``: ``generic_neutral_mesh.obj``, ``identity000.obj`` … ``identity099.obj``, one
OBJ per expression and ``vertex_indices.json``. The npz layout is the one documented in
``shared/README.md`` (bases are differences to the neutral mesh, in cm).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from .model import FaceModel, FaceModelError, MODEL_FILENAME, cache_dir
from .outputs import (OutputError, atomic_open, atomic_output, atomic_write_bytes, check_output_file, make_dirs,
                      output_error, write_errors)

log = logging.getLogger(__name__)

ICT_ARCHIVE_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/refs/heads/master.zip"
NEUTRAL_OBJ = "generic_neutral_mesh.obj"
N_IDENTITY = 100
EXTRA_SHAPES = ("PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R")
MAX_ARCHIVE_BYTES = 2 << 30


class ConversionError(FaceModelError):
    """The OBJ folder or archive is not a usable ICT-FaceKit download."""


def read_obj_vertices(path: Path) -> np.ndarray:
    """Only the ``v`` lines of an OBJ, as (V, 3) float64 (fast path for the 159 shape files)."""
    lines = [ln[2:] for ln in path.read_text(errors="strict").splitlines() if ln.startswith("v ")]
    if not lines:
        raise ConversionError(f"{path} has no vertices")
    values = np.array(" ".join(lines).split(), dtype=np.float64)
    if values.size % 3:
        raise ConversionError(f"{path}: vertex lines do not have 3 coordinates each")
    return values.reshape(-1, 3)


def read_obj_topology(path: Path) -> dict[str, np.ndarray]:
    """Vertices, UVs, polygons (padded to 4 with −1), UV indices and materials of an OBJ."""
    verts, uvs, faces, face_uvs, face_mat, materials = [], [], [], [], [], []
    current = -1
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append(line[2:])
        elif line.startswith("vt "):
            uvs.append(line[3:])
        elif line.startswith("usemtl "):
            name = line.split(None, 1)[1].strip()
            if name not in materials:
                materials.append(name)
            current = materials.index(name)
        elif line.startswith("f "):
            corners = line.split()[1:]
            if not 3 <= len(corners) <= 4:
                raise ConversionError(f"{path}: polygon with {len(corners)} corners is not supported")
            vi = [int(c.split("/")[0]) - 1 for c in corners] + [-1] * (4 - len(corners))
            ti = [int(c.split("/")[1]) - 1 if "/" in c and c.split("/")[1] else -1 for c in corners]
            faces.append(vi)
            face_uvs.append(ti + [-1] * (4 - len(corners)))
            face_mat.append(current)
    return {
        "neutral": np.array(" ".join(verts).split(), np.float64).reshape(-1, 3),
        "uvs": np.array(" ".join(uvs).split(), np.float64).reshape(-1, 2)[:, :2] if uvs else np.zeros((0, 2)),
        "faces": np.asarray(faces, np.int32), "face_uvs": np.asarray(face_uvs, np.int32),
        "face_material": np.asarray(face_mat, np.int16), "material_names": np.asarray(materials),
    }


def find_model_folder(root: Path) -> Path:
    """The folder under ``root`` that holds ``generic_neutral_mesh.obj``."""
    if (root / NEUTRAL_OBJ).is_file():
        return root
    hits = sorted(root.rglob(NEUTRAL_OBJ))
    if not hits:
        raise ConversionError(f"no {NEUTRAL_OBJ} under {root}; is this the ICT-FaceKit download?")
    return hits[0].parent


def convert_folder(folder: Path, strict: bool = True) -> dict[str, np.ndarray]:
    """OBJ folder → dict of npz arrays. ``strict=False`` skips missing shape files (tests)."""
    folder = find_model_folder(Path(folder))
    index_file = folder / "vertex_indices.json"
    if not index_file.is_file():
        raise ConversionError(f"{index_file} is missing")
    try:
        indices = json.loads(index_file.read_text())
        expression_names = list(indices["expressions"])
    except (json.JSONDecodeError, KeyError) as exc:
        raise ConversionError(f"{index_file} is not ICT's vertex index file: {exc}") from None
    topo = read_obj_topology(folder / NEUTRAL_OBJ)
    neutral = topo["neutral"]

    def offsets(names: list[str], label: str) -> tuple[np.ndarray, list[str]]:
        found, used = [], []
        for name in tqdm(names, desc=f"reading {label}", unit="obj", leave=False):
            path = folder / f"{name}.obj"
            if not path.is_file():
                if strict:
                    raise ConversionError(f"{path} is missing: the download is incomplete")
                continue
            v = read_obj_vertices(path)
            if v.shape != neutral.shape:
                raise ConversionError(f"{path} has {len(v)} vertices, the neutral mesh {len(neutral)}")
            found.append(v - neutral)
            used.append(name)
        stack = np.stack(found) if found else np.zeros((0,) + neutral.shape)
        return stack.astype(np.float32), used

    identity, id_names = offsets([f"identity{i:03d}" for i in range(N_IDENTITY)], "identities")
    expressions, expr_names = offsets(expression_names, "expressions")
    extra, extra_names = offsets([n for n in EXTRA_SHAPES if (folder / f"{n}.obj").is_file()], "extras")
    out: dict[str, Any] = {
        "neutral": neutral.astype(np.float32), "identity_basis": identity,
        "expression_basis": expressions, "expression_names": np.asarray(expr_names),
        "extra_shape_basis": extra, "extra_shape_names": np.asarray(extra_names),
        "faces": topo["faces"], "face_uvs": topo["face_uvs"], "uvs": topo["uvs"].astype(np.float32),
        "face_material": topo["face_material"], "material_names": topo["material_names"],
        "identity_names": np.asarray(id_names),
    }
    for key, src in (("landmarks_multipie68", "idx_to_landmark_verts"), ("fitting_vertices", "idx_to_fitting_verts"),
                     ("rigid_vertices", "idx_to_rigid_verts"), ("lap_rigid_vertices", "idx_to_lap_rigid_verts"),
                     ("rigid_landmark_idx", "idx_to_rigid_landmark_idx")):
        if src in indices:
            out[key] = np.asarray(indices[src], np.int32)
    return out


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a zip, refusing absolute paths, ``..`` components, links and zip bombs."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ConversionError(f"{archive} is not a zip archive: {exc}") from None
    with zf:
        total = 0
        dest = dest.resolve()
        for info in zf.infolist():
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in info.filename or ":" in info.filename:
                raise ConversionError(f"unsafe path in archive: {info.filename!r}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ConversionError(f"archive contains a symbolic link: {info.filename!r}")
            target = (dest / Path(*name.parts)).resolve()
            if dest not in target.parents and target != dest:
                raise ConversionError(f"unsafe path in archive: {info.filename!r}")
            total += info.file_size
            if total > MAX_ARCHIVE_BYTES:
                raise ConversionError("archive expands to more than 2 GiB; refusing")
        members = [i for i in zf.infolist() if i.filename.endswith((".obj", ".json", ".mtl", "LICENSE"))
                   or "LICENSE" in i.filename]
        for info in tqdm(members, desc="extracting", unit="file", leave=False):
            zf.extract(info, dest)
    return dest


def download(url: str, dest: Path, expected_sha256: str | None = None) -> Path:
    """Download ``url`` (http(s) or file://) to ``dest`` atomically, checking the hash if given; a failed
    or mismatching download leaves nothing (and ``dest``'s previous content) behind."""
    digest = hashlib.sha256()
    try:
        with atomic_open(dest, "wb") as fh:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc="downloading ICT-FaceKit") as bar:
                        while chunk := resp.read(1 << 20):
                            fh.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except OSError as exc:
                if isinstance(exc, OutputError):
                    raise
                raise ConversionError(f"download of {url} failed: {exc}") from None
            if expected_sha256 and digest.hexdigest() != expected_sha256.lower():
                raise ConversionError(f"{url}: sha256 {digest.hexdigest()} != expected {expected_sha256}")
    except OSError as exc:   # the write side (full disk …): one line naming the file
        raise output_error(exc, dest) from None
    return dest


def write_npz(arrays: dict[str, np.ndarray], out: Path) -> Path:
    """Validate by loading, then write atomically."""
    FaceModel(arrays)  # raises FaceModelError if the result is unusable
    with atomic_output(out) as tmp:
        np.savez_compressed(tmp, **arrays)
    return out


def convert_source(source: Path | str, out: Path | None = None, overwrite: bool = True) -> Path:
    """Folder of OBJs or zip archive → npz at ``out`` (default: the user cache); an existing ``out`` is
    refused unless ``overwrite``."""
    source = Path(source)
    out = check_output_file(out or cache_dir() / MODEL_FILENAME, overwrite, "face model",
                            overwrite_hint="--overwrite")
    if source.is_dir():
        return write_npz(convert_folder(source), out)
    if not source.is_file():
        raise ConversionError(f"{source} does not exist")
    with tempfile.TemporaryDirectory(prefix="facerig-ict-") as tmp:
        root = safe_extract(source, Path(tmp))
        return write_npz(convert_folder(root), out)


LICENSE_NAME = "ICT-FaceKit-LICENSE.txt"


def fetch(url: str = ICT_ARCHIVE_URL, out: Path | None = None, sha256: str | None = None,
          overwrite: bool = True) -> Path:
    """Download the ICT-FaceKit archive, convert it and cache the npz (``out``; an existing one is refused
    unless ``overwrite``).

    The archive goes to a private temporary folder beside ``out`` (same disk; removed afterwards,
    whatever happens), so no file of the user's is ever deleted or replaced but ``out`` itself and the
    licence beside it (written only when absent or already the ICT licence)."""
    out = check_output_file(out or cache_dir() / MODEL_FILENAME, overwrite, "face model")
    make_dirs(out.parent)
    with write_errors(out.parent, "cannot download into"), \
            tempfile.TemporaryDirectory(prefix=f".{out.name}.download-", dir=out.parent) as private:
        archive = Path(private) / "ICT-FaceKit.zip"
        download(url, archive, sha256)
        result = convert_source(archive, out, overwrite=True)
        license_src = None
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1].upper().startswith("LICENSE")]
            if names:
                license_src = zf.read(names[0])
    license_path = out.parent / LICENSE_NAME
    if license_src and (not license_path.exists() or _is_ict_license(license_path)):
        atomic_write_bytes(license_path, license_src)
    elif license_src:
        log.warning("%s exists and is not the ICT-FaceKit licence; left as it is", license_path)
    log.info("face model cached at %s", result)
    return result


def _is_ict_license(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return text.startswith("MIT") or "ICT" in text[:2000]


__all__ = ["ICT_ARCHIVE_URL", "ConversionError", "convert_folder", "convert_source", "download", "fetch",
           "read_obj_topology", "read_obj_vertices", "safe_extract"]
