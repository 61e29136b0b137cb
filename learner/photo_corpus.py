"""Real photos with detector landmarks: weak supervision for the masked landmark loss.

The multi-database fusion idea: photos without 3D labels still constrain the network through
2D landmarks, fused into the unified landmark vector with a mask. Here the landmarks come from
MediaPipe FaceMesh mapped to the 68 iBUG points (``facemodel.landmark_maps.MEDIAPIPE_TO_68``,
derived without any benchmark annotation), so any folder of face photos becomes training data.

Each photo goes through the add-on's own photo pipeline (decode → detect → canonical crop), so a
training crop is framed exactly as an inference crop. The FaceMesh jaw (its FACE_OVAL) is a
fixed set of mesh vertices, like the model's fixed 68-point jaw, so the 68 points fill the
unified "fixed68" slots.

Layout of a photo corpus directory (no pickles; every shard written atomically)::

    manifest.json   {"kind": "photo_landmarks", "version": 1, "image_size": S, "scheme": ...,
                     "sources": [...], "shards": [{"name", "count", "files", "sha256", "bytes"}],
                     "skipped": {reason: count}}
    shard-00000.npz images (n, S, S, 3) uint8, landmarks (n, 68, 2) float32 crop pixels,
                    names (n,) str (source file names)

A killed build resumes with the same command (finished shards are kept, checked by sha256).
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)
KIND = "photo_landmarks"
VERSION = 1
SCHEME = "mediapipe68"
MIN_FACE_PX = 32.0          # landmark box side below which a face is too small to teach anything
FILES_PER_SHARD = 1000


class PhotoCorpusError(RuntimeError):
    """A photo corpus is missing, corrupt, or was built with other settings."""


@dataclass
class PhotoLandmarks:
    """A photo corpus in memory."""

    images: np.ndarray      # (N, S, S, 3) uint8
    landmarks: np.ndarray   # (N, 68, 2) float32, pixels of the stored crop
    names: np.ndarray       # (N,) str
    manifest: dict[str, Any]


def is_photo_corpus(path: Path | str) -> bool:
    m = Path(path) / "manifest.json"
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("kind") == KIND
    except (json.JSONDecodeError, OSError):
        return False


def list_photos(folders: Sequence[Path | str]) -> list[Path]:
    """All image files of the folders (not recursive), sorted, so shard contents are stable."""
    from runtime.formats import PHOTO_SUFFIXES, photos_in

    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"photo folder not found: {folder}")
        files += photos_in(folder)
    if not files:
        raise PhotoCorpusError(f"no images ({', '.join(PHOTO_SUFFIXES)}) in {', '.join(map(str, folders))}")
    return files


def crop_photo(path: Path, size: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(crop, 68 landmarks in crop pixels) of the largest face, or the reason it was skipped."""
    from runtime.detect import detect_faces
    from runtime.photo import PhotoError, crop_square, load_image

    try:
        image = load_image(path)
    except (PhotoError, OSError) as exc:
        log.debug("%s: %s", path.name, exc)
        return "unreadable or too small"
    faces = detect_faces(image, max_faces=2)
    if not faces:
        return "no face"
    face = faces[0]
    lo, hi = face.landmarks.min(0), face.landmarks.max(0)
    if float(max(hi - lo)) < MIN_FACE_PX:
        return "face too small"
    box = face.crop_box
    scale = size / (box[2] - box[0])
    points = (face.landmarks - np.array(box[:2])) * scale
    return crop_square(image, box, size), points.astype(np.float32)


def _manifest_path(out: Path) -> Path:
    return out / "manifest.json"


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    from facemodel.outputs import atomic_write_bytes

    atomic_write_bytes(_manifest_path(out), json.dumps(manifest, indent=1).encode())


def build_photo_corpus(folders: Sequence[Path | str], out: Path | str, size: int = 128,
                       limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Detect, crop and label every photo of ``folders`` into ``out``; resumable; returns the manifest."""
    from tqdm import tqdm

    from facemodel.outputs import atomic_write_bytes
    from synth.corpus import sha256_file

    out = Path(out)
    files = list_photos(folders)[:limit]
    settings = {"image_size": int(size), "scheme": SCHEME, "min_face_px": MIN_FACE_PX,
                "sources": [str(Path(f).resolve()) for f in folders], "limit": limit}
    manifest: dict[str, Any] = {"kind": KIND, "version": VERSION, **settings, "shards": [], "skipped": {},
                                "files_total": len(files)}
    if _manifest_path(out).is_file():
        old = read_manifest(out)
        if {k: old.get(k) for k in settings} != settings:
            raise PhotoCorpusError(f"{out} was built with other settings "
                                   f"({ {k: old.get(k) for k in settings} }); choose a new --out")
        manifest = old
    out.mkdir(parents=True, exist_ok=True)
    done = {s["name"]: s for s in manifest["shards"]}
    shards = [files[i:i + FILES_PER_SHARD] for i in range(0, len(files), FILES_PER_SHARD)]
    skipped: Counter[str] = Counter()
    bar = tqdm(total=len(files), desc="photos", unit="img", disable=not progress, dynamic_ncols=True)
    kept: list[dict[str, Any]] = []
    for index, group in enumerate(shards):
        name = f"shard-{index:05d}.npz"
        info = done.get(name)
        if info and (out / name).is_file() and sha256_file(out / name) == info["sha256"]:
            kept.append(info)
            skipped.update(info.get("skipped", {}))
            bar.update(len(group))
            continue
        images, points, names, why = [], [], [], Counter()
        for path in group:
            result = crop_photo(path, size)
            if isinstance(result, str):
                why[result] += 1
            else:
                images.append(result[0])
                points.append(result[1])
                names.append(path.name)
            bar.update(1)
        buf = io.BytesIO()
        np.savez(buf, images=np.asarray(images, np.uint8).reshape(-1, size, size, 3),
                 landmarks=np.asarray(points, np.float32).reshape(-1, 68, 2), names=np.asarray(names, str))
        atomic_write_bytes(out / name, buf.getvalue())
        info = {"name": name, "count": len(images), "files": len(group), "sha256": sha256_file(out / name),
                "bytes": (out / name).stat().st_size, "skipped": dict(why)}
        kept.append(info)
        skipped.update(why)
        manifest["shards"] = kept + [s for s in manifest["shards"] if s["name"] not in {k["name"] for k in kept}]
        manifest["skipped"] = dict(skipped)
        _write_manifest(out, manifest)
        log.info("%s: %d faces, skipped %s", name, len(images), dict(why) or "none")
    bar.close()
    manifest["shards"], manifest["skipped"] = kept, dict(skipped)
    manifest["count"] = sum(s["count"] for s in kept)
    _write_manifest(out, manifest)
    log.info("photo corpus %s: %d faces from %d photos; skipped %s", out, manifest["count"], len(files),
             manifest["skipped"])
    return manifest


def read_manifest(path: Path | str) -> dict[str, Any]:
    from synth.corpus import read_kind_manifest

    return read_kind_manifest(_manifest_path(Path(path)), KIND, VERSION, PhotoCorpusError,
                              f"{path} is not a photo corpus (no manifest.json)")


def load_photo_corpus(path: Path | str) -> PhotoLandmarks:
    """All shards of a photo corpus, checked against the manifest's sha256 (never unpickled)."""
    from synth.corpus import sha256_file

    path = Path(path)
    manifest = read_manifest(path)
    processed = sum(int(s.get("files", 0)) for s in manifest["shards"])
    if "count" not in manifest or processed < int(manifest.get("files_total", processed)):
        # `build_photo_corpus` writes "count" last: a corpus still being prepared (or interrupted)
        # loads as a smaller valid one, so say so — a training run on it would silently see fewer photos.
        log.warning("photo corpus %s is incomplete: %d of %s photos processed (`facerig photos prepare` is "
                    "still running or was interrupted; rerun the same command to finish it)", path, processed,
                    manifest.get("files_total", "?"))
    size = int(manifest["image_size"])
    images, points, names = [], [], []
    for info in manifest["shards"]:
        shard = path / info["name"]
        if not shard.is_file() or sha256_file(shard) != info["sha256"]:
            raise PhotoCorpusError(f"{shard}: missing or corrupt (checksum mismatch); rerun the same "
                                   "`facerig photos prepare` command to rebuild it")
        with np.load(shard, allow_pickle=False) as z:
            img, lm, nm = z["images"], z["landmarks"], z["names"]
        if img.shape[1:] != (size, size, 3) or lm.shape != (len(img), 68, 2) or len(nm) != len(img):
            raise PhotoCorpusError(f"{shard}: arrays do not match the manifest")
        images.append(img)
        points.append(lm)
        names.append(nm)
    if not images:
        raise PhotoCorpusError(f"{path} holds no faces")
    return PhotoLandmarks(np.concatenate(images), np.concatenate(points), np.concatenate(names), manifest)


__all__ = ["PhotoCorpusError", "PhotoLandmarks", "build_photo_corpus", "load_photo_corpus", "is_photo_corpus",
           "crop_photo", "list_photos", "read_manifest", "SCHEME"]
