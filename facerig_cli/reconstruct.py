"""Photos → files, the work behind ``facerig reconstruct`` and ``facerig demo`` (:mod:`reconstruct_cmd`).

One photo → .blend / .glb / .gltf / .fbx / .obj (Blender, via ``blender_addon``) or .json (parameters
only; no Blender needed), or several photos of one person → one head; the outputs' names and formats,
checked before any photo is read. :mod:`batch` runs :func:`reconstruct_to_file` over many photos.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from facemodel.outputs import OutputError, check_output_file, staged_output, write_json

log = logging.getLogger(__name__)

BLENDER_FORMATS = (".blend", ".glb", ".gltf", ".fbx", ".obj")
ALL_FORMATS = BLENDER_FORMATS + (".json",)


def expand_photo_args(paths: list[Path]) -> list[Path]:
    """The photos a command line names: files as given, folders as the photos directly in them
    (``runtime.formats.PHOTO_SUFFIXES``, sorted by name)."""
    from runtime.formats import PHOTO_SUFFIXES, photos_in
    from runtime.photo import PhotoNotFoundError

    photos: list[Path] = []
    for path in paths:
        if not path.is_dir():
            photos.append(path)
            continue
        found = photos_in(path)
        if not found:
            raise PhotoNotFoundError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in the folder {path}")
        photos += found
    return photos


def _unique_names(photos: list[Path]) -> list[str]:
    """Photo names for outputs: the stem, with the suffix (then a number) where stems repeat, so that
    a.jpg and a.heic, or two folders' a.jpg, do not overwrite each other's output."""
    stems = [p.stem for p in photos]
    names = [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if stems.count(p.stem) > 1 else p.stem for p in photos]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def output_paths(photos: list[Path], out: Path, fmt: str) -> list[Path]:
    """One output per photo: OUT itself, OUT/<photo>.<fmt>, or <OUT stem>-<photo><ext>."""
    if len(photos) == 1 and out.suffix:
        return [out]
    names = _unique_names(photos)
    if out.suffix:
        return [out.with_name(f"{out.stem}-{n}{out.suffix}") for n in names]
    return [out / f"{n}.{fmt}" for n in names]


def _check_format(path: Path) -> None:
    if path.suffix.lower() not in ALL_FORMATS:
        raise ValueError(f"unknown output format {path.suffix!r}; use one of {', '.join(ALL_FORMATS)}")


def reconstruct_to_file(photo: Path | np.ndarray, out: Path, args: argparse.Namespace, source: str = "") -> dict[str, Any]:
    """Run the photo pipeline (and Blender for mesh formats) for one photo; returns timings."""
    from runtime.pipeline import reconstruct_photo

    recon = reconstruct_photo(photo, args.face, args.model, refine=not args.no_refine,
                              face_model=str(args.face_model) if args.face_model else None)
    if source:
        recon.source = source
    report: dict[str, Any] = {"photo": recon.timings}
    report["_recon"] = recon
    if out.suffix.lower() == ".json":
        doc = {"params": recon.params.to_dict(), "crop_params": recon.crop_params.to_dict(), **recon.summary(),
               "landmarks": recon.landmarks.tolist(), **_expression_names(recon.params, args)}
        if recon.regressed_params is not None:
            doc["regressed_crop_params"] = recon.regressed_params.to_dict()
        write_json(out, doc)
        return report
    return _build_and_export(recon, out, args, report)


def _expression_names(params: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON's expression under both namings: ``params.expression`` is ICT's order; ``expression_ict``
    and ``expression_arkit`` name each weight (ARKit's 52, ``tongueOut`` null: ICT has no such shape)."""
    from runtime.arkit import expression_record
    from runtime.pipeline import load_face_model

    model = load_face_model(str(args.face_model) if args.face_model else None)
    return expression_record(model.expression_names, params.expression)


def _build_and_export(recon: Any, out: Path, args: argparse.Namespace, report: dict[str, Any],
                      name: str | None = None) -> dict[str, Any]:
    """Build the head in Blender and write ``out`` (.blend/.glb/.fbx/.obj); adds timings to ``report``."""
    result, report["build"] = build_in_blender(recon, args, name=name)
    t = time.perf_counter()
    export_atomically(out)
    report["export_ms"] = (time.perf_counter() - t) * 1e3
    report["_result"] = result
    return report


def export_atomically(out: Path) -> None:
    """Blender's exporter writes into a hidden staging folder beside ``out``; the files are renamed into
    place only when it succeeded, so a killed or failed export (a full disk) leaves the user's previous
    ``out`` whole and no partial file behind. A failing exporter's multi-line report becomes one line."""
    from blender_addon.export import export_scene

    with staged_output(out) as staged:
        try:
            export_scene(staged)
        except RuntimeError as exc:   # bpy.ops reports an exporter's failure (its traceback) as RuntimeError
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise OutputError(f"cannot write {out}: Blender's exporter failed: "
                              f"{lines[-1] if lines else type(exc).__name__}") from exc


def build_in_blender(recon: Any, args: argparse.Namespace, name: str | None = None) -> tuple[Any, dict[str, float]]:
    try:
        import bpy
    except ImportError as exc:
        raise ValueError(f"Blender's bpy module is needed for mesh formats ({exc}); .json works without") from None
    from blender_addon.build_mesh import BuildOptions, build_face
    from runtime.pipeline import load_face_model

    bpy.ops.wm.read_factory_settings(use_empty=True)
    model = load_face_model(str(args.face_model) if args.face_model else None)
    options = BuildOptions(texture_size=args.texture_size, remove_lighting=args.remove_lighting,
                           build_armature=not args.no_armature,
                           add_camera=not args.no_camera, shape_key_names=args.shape_key_names,
                           teeth=not args.no_teeth,
                           name=name or (Path(recon.source).stem[:40] if recon.source else "Face"))
    result = build_face(model, recon, options, bpy.context)
    return result, result.timings


def reconstruct_same_person_to_file(photos: list[Path], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """All photos → one head (or its params as .json); returns timings and the reconstruction."""
    from runtime.same_person import reconstruct_same_person
    from runtime.pipeline import load_face_model

    model = load_face_model(str(args.face_model) if args.face_model else None)
    same = reconstruct_same_person(photos, args.face, args.model, args.cnet, model, refine=not args.no_refine)
    report: dict[str, Any] = {"same_person": same.timings, "_same": same}
    if out.suffix.lower() == ".json":
        doc = {"params": same.params.to_dict(), "same_person": same.summary(), **_expression_names(same.params, args),
               "photos": [{**p.summary(), "crop_params": p.crop_params.to_dict(), "landmarks": p.landmarks.tolist()}
                          for p in same.photos]}
        write_json(out, doc)
        return report
    return _build_and_export(same, out, args, report, name=Path(same.primary.source).stem[:40] or "Face")


def check_outputs(outs: list[Path], overwrite: bool) -> None:
    """Every output's format and path, before any photo is read (docs/robustness.md)."""
    for o in outs:
        _check_format(o)
        check_output_file(o, overwrite)
        if o.suffix.lower() == ".obj":   # the .mtl and the texture folder beside it
            check_output_file(o.with_suffix(".mtl"), overwrite)
            textures = o.parent / f"{o.stem}_textures"
            if textures.exists() and not textures.is_dir():
                raise OutputError(f"cannot write the textures of {o}: {textures} is a file, not a folder")


def check_models(args: argparse.Namespace, mesh_output: bool) -> None:
    """The regressor, and the face model where it is used, loaded and matched before any photo is read:
    a damaged file or a face model with other modes is one line now, not a shape error per photo."""
    from runtime.pipeline import get_regressor, load_face_model

    regressor = get_regressor(args.model)
    if args.face_model or mesh_output or args.same_person or not args.no_refine:
        load_face_model(str(args.face_model) if args.face_model else None).check_layout(regressor.layout)


__all__ = ["ALL_FORMATS", "BLENDER_FORMATS", "build_in_blender", "check_models", "check_outputs", "expand_photo_args",
           "export_atomically", "output_paths", "reconstruct_same_person_to_file", "reconstruct_to_file"]
