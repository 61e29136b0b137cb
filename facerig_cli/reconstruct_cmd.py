"""``facerig reconstruct`` and ``facerig demo`` (``facerig addon build`` is in ``addon_build``).

reconstruct: photos → .blend / .glb / .gltf / .fbx / .obj (Blender, via ``blender_addon``) or
.json (parameters only; no Blender needed); one output per photo, or with ``--same-person`` one head
from all photos (identity aggregated by the C-Net, texture merged). demo: the public-domain astronaut photo from
scikit-image through the whole pipeline, plus a PNG contact sheet.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from facemodel.outputs import (OutputError, atomic_output, check_output_dir, check_output_file, staged_output,
                               write_json)

from .args import add_overwrite, int_range, texture_size

log = logging.getLogger(__name__)

BLENDER_FORMATS = (".blend", ".glb", ".gltf", ".fbx", ".obj")
ALL_FORMATS = BLENDER_FORMATS + (".json",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="photo(s) → rigged face: .blend, .glb, .fbx, .obj or .json (params)")
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO",
                   help="photo files, or folders whose photos (JPEG, PNG, HEIC, …) are all taken")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output file (format by extension); with several photos a directory or a "
                        "name that gets the photo name appended")
    p.add_argument("--format", choices=[f[1:] for f in ALL_FORMATS], default="blend",
                   help="format when OUT is a directory (default blend)")
    p.add_argument("--same-person", action="store_true",
                   help="the photos show one person: build ONE head (identity aggregated over all photos, "
                        "texture merged, pose/expression/camera from the most frontal photo)")
    p.add_argument("--cnet", type=Path, help="confidence network for --same-person (default: $FACERIG_CNET, then "
                                             "blender_addon/models/facerig_cnet.onnx; none = plain average)")
    p.add_argument("--workers", type=int_range(1), default=1, metavar="N",
                   help="reconstruct on N processes, one per core (.json output; the same files as one by one)")
    add_overwrite(p)
    _common(p)
    p.set_defaults(func=cmd_reconstruct)

    d = sub.add_parser("demo", help="reconstruct the public-domain astronaut photo (scikit-image) and render it")
    d.add_argument("-o", "--out", type=Path, default=Path("facerig_demo"), help="output directory")
    _common(d)
    d.set_defaults(func=cmd_demo)



def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face", type=int_range(0, None), default=None, metavar="N",
                   help="face index, 0 = largest (default) [at least 0]")
    p.add_argument("--model", type=Path, help="ONNX regressor (default: blender_addon/models/facerig_regressor.onnx)")
    p.add_argument("--face-model", type=Path, help="ICT face model npz (default: $FACERIG_FACE_MODEL, then cache)")
    p.add_argument("--texture-size", type=texture_size, default=1024, metavar="PX",
                   help="texture side in texels (default 1024) [64…4096, and what the memory available allows]")
    p.add_argument("--remove-lighting", action="store_true",
                   help="divide the photo's lighting (fitted to the face) out of the texture, to light the head again "
                        "(default: the texture shows the photo as lit)")
    p.add_argument("--no-armature", action="store_true")
    p.add_argument("--no-camera", action="store_true")
    p.add_argument("--shape-key-names", choices=("arkit", "ict"), default="arkit",
                   help="shape keys / glTF morph targets named as Apple's ARKit blendshapes (default; 51 of the 52, "
                        "no tongueOut) or as ICT-FaceKit's 53 (eyeBlink_L, split browInnerUp_L/_R, …)")
    p.add_argument("--no-teeth", action="store_true", help="a toothless head (no teeth object)")
    p.add_argument("--no-refine", action="store_true",
                   help="keep the network's prediction as is (default: refine it on the detected landmarks, "
                        "≈ 12 ms a photo; with --same-person each photo's shape is refined before they are averaged; "
                        "docs/reconstruct.md)")


# -- reconstruct ------------------------------------------------------------------------------------
def expand_photo_args(paths: list[Path]) -> list[Path]:
    """The photos a command line names: files as given, folders as the photos directly in them
    (``blender_addon.formats.PHOTO_SUFFIXES``, sorted by name)."""
    from blender_addon.formats import PHOTO_SUFFIXES, photos_in
    from blender_addon.photo import PhotoNotFoundError

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
    from blender_addon.pipeline import reconstruct_photo

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
    from blender_addon.arkit import expression_record
    from blender_addon.pipeline import load_face_model

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
    from blender_addon.build_mesh import export_scene

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
    from blender_addon.pipeline import load_face_model

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
    from blender_addon.aggregate import reconstruct_same_person
    from blender_addon.pipeline import load_face_model

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


def cmd_reconstruct_same_person(args: argparse.Namespace, out: Path) -> int:
    t = time.perf_counter()
    same = reconstruct_same_person_to_file(args.photos, out, args)["_same"]
    print(f"{len(same.photos)} photo(s) of one person → {out} ({time.perf_counter() - t:.2f} s; "
          f"C-Net {same.cnet_version})")
    means = same.confidence_summary()
    for k, photo in enumerate(same.photos):
        mark = "*" if k == same.primary_index else " "
        flag = "  ← looks like a different person" if same.outliers[k] else ""
        print(f"  {mark} {photo.source}: {same.distances_mm[k]:.2f} mm from the aggregate, "
              f"mean confidence {means[k]:.3g}{flag}")
    for skipped in same.skipped:
        print(f"  skipped {skipped.source}: {skipped.reason}")
    print(f"  (* = primary photo: pose, expression and camera; flag threshold {same.threshold_mm:.2f} mm)")
    if same.skipped:   # the head was written from the others; the exit code tells a script that not all counted
        print(f"facerig: error: {len(same.skipped)} of {len(args.photos)} photos skipped: "
              + ", ".join(Path(s.source).name for s in same.skipped), file=sys.stderr)
        return 2
    return 0


def check_models(args: argparse.Namespace, mesh_output: bool) -> None:
    """The regressor, and the face model where it is used, loaded and matched before any photo is read:
    a damaged file or a face model with other modes is one line now, not a shape error per photo."""
    from blender_addon.pipeline import get_regressor, load_face_model

    regressor = get_regressor(args.model)
    if args.face_model or mesh_output or args.same_person or not args.no_refine:
        load_face_model(str(args.face_model) if args.face_model else None).check_layout(regressor.layout)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .batch import check_batch_options, describe_rate, reconstruct_all

    args.photos = expand_photo_args(args.photos)
    outs = output_paths(args.photos[:1] if args.same_person else args.photos, args.out, args.format)
    check_outputs(outs, args.overwrite)
    check_batch_options(args, tuple(o.suffix.lower() for o in outs))
    if len(args.photos) == 1:   # one photo: a bad one is refused before the models load (a batch skips it)
        from blender_addon.photo import check_photo

        check_photo(args.photos[0])
    check_models(args, any(o.suffix.lower() in BLENDER_FORMATS for o in outs))
    if args.same_person:
        return cmd_reconstruct_same_person(args, outs[0])
    if args.cnet:
        log.warning("--cnet is only used with --same-person; each photo is reconstructed on its own")
    failed: list[tuple[Path, str]] = []
    t = time.perf_counter()
    for done in reconstruct_all(args.photos, outs, args, args.workers):
        if done.error is not None:   # this photo's problem (unreadable, missing, no face, no face N): go on
            print(f"{done.photo}: skipped: {done.error}", file=sys.stderr)
            failed.append((done.photo, str(done.error)))
            continue
        print(f"{done.photo} → {done.out} ({done.seconds:.2f} s)")
        if len(done.faces) > 1:
            print(f"  {len(done.faces)} faces found; reconstructed {done.face_index} (choose with --face N):")
            for i, face in enumerate(done.faces):
                print(f"  {'*' if i == done.face_index else ' '} {i}: {face}")
    if len(args.photos) > 1:
        print(describe_rate(len(args.photos) - len(failed), time.perf_counter() - t, args.workers))
    if failed:   # the others were written; the exit code still tells a script that not all were
        print(f"facerig: error: {len(failed)} of {len(args.photos)} photos failed: "
              + ", ".join(p.name for p, _ in failed), file=sys.stderr)
        return 2
    return 0


# -- demo ---------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from skimage import data

    out = check_output_dir(args.out)   # the demo's own three files in it are replaced on every run
    photo = out / "astronaut.png"
    write_image(photo, data.astronaut())
    report = reconstruct_to_file(photo, out / "astronaut.blend", args)
    export_atomically(out / "astronaut.glb")
    recon, result = report["_recon"], report["_result"]
    write_image(out / "astronaut_demo.png", render_sheet(recon, result))
    print(f"demo written to {out}/: astronaut.blend, astronaut.glb, astronaut_demo.png "
          f"(photo → params {sum(v for k, v in recon.timings.items() if k != 'model_load'):.0f} ms, "
          f"build {sum(result.timings.values()):.0f} ms)")
    return 0


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """An RGB uint8 image as PNG/JPEG by ``path``'s extension, atomically; a failed encoding is an error
    (``cv2.imwrite`` only returns False)."""
    import cv2

    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise OutputError(f"cannot write {path}: the image could not be encoded")
    return path


def render_sheet(recon: Any, result: Any, panel: int = 384) -> np.ndarray:
    """photo | overlay | shaded front | textured front | shaded 3/4 | textured 3/4 (numpy raster)."""
    import cv2

    from blender_addon.pipeline import load_face_model
    from blender_addon.texture import posed_geometry

    from .raster import draw_mesh, headlight

    model = load_face_model(None)
    params = recon.params
    image = recon.image
    h, w = image.shape[:2]
    cam, normals, pix = posed_geometry(model, params, w, h)
    tris = model.render_triangles
    keep = ~np.isin(tris, model.vertex_range("eyelashes")).any(1)
    tris = tris[keep]
    shade = headlight(normals)
    tex_colours = _vertex_texture_colours(model, result)
    photo_panel = _fit(image, panel)
    over = draw_mesh(pix, -cam[:, 2], shade, tris, w, h, background=(0, 0, 0))
    mask = draw_mesh(pix, -cam[:, 2], np.ones_like(shade), tris, w, h, background=(0, 0, 0))[..., :1] > 0
    overlay = np.where(mask, (0.45 * image + 0.55 * over).astype(np.uint8), image)
    panels = [photo_panel, _fit(overlay, panel)]
    p = params.numpy()
    for yaw in (0.0, np.deg2rad(35.0)):
        view = replace(p, rotation=np.array([yaw, 0.0, 0.0], np.float32),
                       translation=np.array([0.0, -1.0, -125.0], np.float32), camera=np.array([4.0, 0.5, 0.5], np.float32))
        vcam, vn, vpix = posed_geometry(model, view, panel, panel)
        panels.append(draw_mesh(vpix, -vcam[:, 2], headlight(vn), tris, panel, panel))
        panels.append(draw_mesh(vpix, -vcam[:, 2], tex_colours, tris, panel, panel))
    sheet = np.concatenate(panels, axis=1)
    labels = ["photo", "overlay", "shaded front", "textured front", "shaded 3/4", "textured 3/4"]
    for i, text in enumerate(labels):
        cv2.putText(sheet, text, (i * panel + 8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return sheet


def _vertex_texture_colours(model: Any, result: Any) -> np.ndarray:
    """Per-vertex colours sampled from the baked textures (through Blender's images)."""
    mesh = result.mesh_object.data
    colours = np.full((model.n_vertices, 3), 0.6, np.float32)
    for slot, mat in enumerate(mesh.materials):
        img = next((n.image for n in mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image), None)
        sel = model.face_material == slot
        corners = model.faces[sel]
        uvc = model.face_uvs[sel]
        ok = corners >= 0
        vidx, uidx = corners[ok], uvc[ok]
        if img is None:
            colours[vidx] = np.asarray(mat.diffuse_color[:3]) ** (1 / 2.2)
            continue
        iw, ih = img.size
        px = np.empty(iw * ih * 4, np.float32)
        img.pixels.foreach_get(px)
        px = px.reshape(ih, iw, 4)
        uv = model.uvs[uidx] % 1.0
        colours[vidx] = px[np.clip((uv[:, 1] * ih).astype(int), 0, ih - 1), np.clip((uv[:, 0] * iw).astype(int), 0, iw - 1), :3]
    return colours


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = size / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size, 3), 30, np.uint8)
    y0, x0 = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out


__all__ = ["register", "output_paths", "render_sheet"]
