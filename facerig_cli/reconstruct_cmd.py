"""``facerig reconstruct``, ``facerig demo`` and ``facerig addon build``.

reconstruct: photos → .blend / .glb / .gltf / .fbx / .obj (Blender, via ``blender_addon``) or
.json (parameters only; no Blender needed); one output per photo, or with ``--same-person`` one head
from all photos (identity aggregated by the C-Net, texture merged). demo: the public-domain astronaut photo from
scikit-image through the whole pipeline, plus a PNG contact sheet. addon build: the Blender
extension zip with the wheels it needs, so users need no pip.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
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
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="reconstruct on N processes, one per core (.json output; the same files as one by one)")
    _common(p)
    p.set_defaults(func=cmd_reconstruct)

    d = sub.add_parser("demo", help="reconstruct the public-domain astronaut photo (scikit-image) and render it")
    d.add_argument("-o", "--out", type=Path, default=Path("facerig_demo"), help="output directory")
    _common(d)
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("addon", help="the Blender extension")
    asub = a.add_subparsers(dest="addon_command", metavar="ACTION")
    b = asub.add_parser("build", help="build the installable extension zip (bundles wheels and facemodel)")
    b.add_argument("-o", "--out", type=Path, default=Path("dist/facerig.zip"))
    b.add_argument("--platform", action="append", choices=sorted(PLATFORM_TAGS),
                   help="target platform(s) (default linux-x64)")
    b.add_argument("--wheel-cache", type=Path, default=ROOT / "build" / "wheels",
                   help="where downloaded wheels are kept between builds")
    b.add_argument("--no-wheels", action="store_true", help="do not bundle wheels (users pip-install them)")
    b.set_defaults(func=cmd_addon_build)
    a.set_defaults(func=lambda args: a.print_help() or 2)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face", type=int, default=None, metavar="N", help="face index, 0 = largest (default)")
    p.add_argument("--model", type=Path, help="ONNX regressor (default: blender_addon/models/facerig_regressor.onnx)")
    p.add_argument("--face-model", type=Path, help="ICT face model npz (default: $FACERIG_FACE_MODEL, then cache)")
    p.add_argument("--texture-size", type=int, default=1024)
    p.add_argument("--remove-lighting", action="store_true",
                   help="divide the photo's lighting (fitted to the face) out of the texture, to light the head again "
                        "(default: the texture shows the photo as lit)")
    p.add_argument("--no-armature", action="store_true")
    p.add_argument("--no-camera", action="store_true")
    p.add_argument("--no-refine", action="store_true",
                   help="keep the network's prediction as is (default: refine it on the detected landmarks, "
                        "≈ 12 ms a photo; with --same-person each photo's shape is refined before they are averaged; "
                        "README \"Refinement\")")


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
    from synth.corpus import atomic_write_bytes

    recon = reconstruct_photo(photo, args.face, args.model, refine=not args.no_refine,
                              face_model=str(args.face_model) if args.face_model else None)
    if source:
        recon.source = source
    report: dict[str, Any] = {"photo": recon.timings}
    report["_recon"] = recon
    if out.suffix.lower() == ".json":
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"params": recon.params.to_dict(), "crop_params": recon.crop_params.to_dict(), **recon.summary(),
               "landmarks": recon.landmarks.tolist()}
        if recon.regressed_params is not None:
            doc["regressed_crop_params"] = recon.regressed_params.to_dict()
        atomic_write_bytes(out, json.dumps(doc, indent=1).encode())
        return report
    return _build_and_export(recon, out, args, report)


def _build_and_export(recon: Any, out: Path, args: argparse.Namespace, report: dict[str, Any],
                      name: str | None = None) -> dict[str, Any]:
    """Build the head in Blender and write ``out`` (.blend/.glb/.fbx/.obj); adds timings to ``report``."""
    from blender_addon.build_mesh import export_scene

    result, report["build"] = build_in_blender(recon, args, name=name)
    t = time.perf_counter()
    export_scene(out)
    report["export_ms"] = (time.perf_counter() - t) * 1e3
    report["_result"] = result
    return report


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
                           add_camera=not args.no_camera,
                           name=name or (Path(recon.source).stem[:40] if recon.source else "Face"))
    result = build_face(model, recon, options, bpy.context)
    return result, result.timings


def reconstruct_same_person_to_file(photos: list[Path], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """All photos → one head (or its params as .json); returns timings and the reconstruction."""
    from blender_addon.aggregate import reconstruct_same_person
    from blender_addon.pipeline import load_face_model
    from synth.corpus import atomic_write_bytes

    model = load_face_model(str(args.face_model) if args.face_model else None)
    same = reconstruct_same_person(photos, args.face, args.model, args.cnet, model, refine=not args.no_refine)
    report: dict[str, Any] = {"same_person": same.timings, "_same": same}
    if out.suffix.lower() == ".json":
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"params": same.params.to_dict(), "same_person": same.summary(),
               "photos": [{**p.summary(), "crop_params": p.crop_params.to_dict(), "landmarks": p.landmarks.tolist()}
                          for p in same.photos]}
        atomic_write_bytes(out, json.dumps(doc, indent=1).encode())
        return report
    return _build_and_export(same, out, args, report, name=Path(same.primary.source).stem[:40] or "Face")


def cmd_reconstruct_same_person(args: argparse.Namespace) -> int:
    out = output_paths(args.photos[:1], args.out, args.format)[0]
    _check_format(out)
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
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .batch import check_batch_options, describe_rate, reconstruct_all

    args.photos = expand_photo_args(args.photos)
    outs = output_paths(args.photos, args.out, args.format)
    check_batch_options(args, tuple(o.suffix.lower() for o in outs))
    if args.same_person:
        return cmd_reconstruct_same_person(args)
    if args.cnet:
        log.warning("--cnet is only used with --same-person; each photo is reconstructed on its own")
    for o in outs:
        _check_format(o)
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
    import cv2
    from skimage import data

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    photo = out / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    report = reconstruct_to_file(photo, out / "astronaut.blend", args)
    from blender_addon.build_mesh import export_scene

    export_scene(out / "astronaut.glb")
    recon, result = report["_recon"], report["_result"]
    sheet = render_sheet(recon, result)
    cv2.imwrite(str(out / "astronaut_demo.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"demo written to {out}/: astronaut.blend, astronaut.glb, astronaut_demo.png "
          f"(photo → params {sum(v for k, v in recon.timings.items() if k != 'model_load'):.0f} ms, "
          f"build {sum(result.timings.values()):.0f} ms)")
    return 0


def render_sheet(recon: Any, result: Any, panel: int = 384) -> np.ndarray:
    """photo | overlay | shaded front | textured front | shaded 3/4 | textured 3/4 (numpy raster)."""
    import cv2

    from blender_addon.pipeline import load_face_model
    from blender_addon.texture import posed_geometry
    from facemodel import FaceParams

    from .raster import draw_mesh

    model = load_face_model(None)
    params = recon.params
    image = recon.image
    h, w = image.shape[:2]
    cam, normals, pix = posed_geometry(model, params, w, h)
    tris = model.render_triangles
    keep = ~np.isin(tris, model.vertex_range("eyelashes")).any(1)
    tris = tris[keep]
    shade = _headlight(normals)
    tex_colours = _vertex_texture_colours(model, result)
    photo_panel = _fit(image, panel)
    over = draw_mesh(pix, -cam[:, 2], shade, tris, w, h, background=(0, 0, 0))
    mask = draw_mesh(pix, -cam[:, 2], np.ones_like(shade), tris, w, h, background=(0, 0, 0))[..., :1] > 0
    overlay = np.where(mask, (0.45 * image + 0.55 * over).astype(np.uint8), image)
    panels = [photo_panel, _fit(overlay, panel)]
    p = params.numpy()
    for yaw in (0.0, np.deg2rad(35.0)):
        view = FaceParams(p.identity, p.expression, np.array([yaw, 0.0, 0.0], np.float32),
                          np.array([0.0, -1.0, -125.0], np.float32), p.sh, p.albedo,
                          np.array([4.0, 0.5, 0.5], np.float32))
        vcam, vn, vpix = posed_geometry(model, view, panel, panel)
        panels.append(draw_mesh(vpix, -vcam[:, 2], _headlight(vn), tris, panel, panel))
        panels.append(draw_mesh(vpix, -vcam[:, 2], tex_colours, tris, panel, panel))
    sheet = np.concatenate(panels, axis=1)
    labels = ["photo", "overlay", "shaded front", "textured front", "shaded 3/4", "textured 3/4"]
    for i, text in enumerate(labels):
        cv2.putText(sheet, text, (i * panel + 8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return sheet


def _headlight(normals: np.ndarray) -> np.ndarray:
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    lum = 0.15 + 0.8 * np.clip(normals @ light, 0, 1)
    return np.repeat(lum[:, None], 3, axis=1) * np.array([0.85, 0.8, 0.78])


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


# -- addon build ------------------------------------------------------------------------------------
PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64", "macosx_14_0_arm64"],
}
# Distributions Blender itself ships (its Python has them) or the add-on never needs at run time.
BLENDER_PROVIDES = {"numpy", "requests", "certifi", "idna", "urllib3", "charset-normalizer", "zstandard",
                    "cython", "bpy", "facerig", "pip", "setuptools", "wheel"}
ADDON_FILES_EXCLUDE = {"__pycache__"}

_PROBE = r"""
import json, sys, importlib.metadata as md
before = set(sys.modules)
import numpy as np
from blender_addon import pipeline, detect, regressor, photo, texture, rig  # noqa: F401
import facemodel.convert  # noqa: F401  (the panel's "Download Face Model" button)
import onnxruntime  # noqa: F401
detect.detect_faces(np.full((96, 96, 3), 128, np.uint8))
photo.pillow_image()  # Pillow and pillow-heif (GIF/HEIC/AVIF photos), imported on first use
mods = {m.split('.')[0] for m in sys.modules}
dists = md.packages_distributions()
out = {}
for m in sorted(mods):
    for d in dists.get(m, []):
        out[d] = md.version(d)
print(json.dumps(out))
"""


def runtime_distributions() -> dict[str, str]:
    """Distributions the photo pipeline really imports (run in a subprocess), minus Blender's own."""
    res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "GLOG_minloglevel": "3"})
    if res.returncode != 0:
        raise RuntimeError(f"could not import the photo pipeline to list its wheels:\n{res.stderr[-2000:]}")
    found = json.loads(res.stdout.strip().splitlines()[-1])
    return {d: v for d, v in found.items() if d.lower().replace("_", "-") not in BLENDER_PROVIDES}


def download_wheels(dists: dict[str, str], platform: str, cache: Path) -> list[Path]:
    """``pip download --only-binary :all:`` of exact versions for Blender's Python 3.11."""
    target = cache / platform
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none", "-d", str(target),
           "--disable-pip-version-check", "-q"]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    cmd += ["--platform", "any"]
    cmd += [f"{d}=={v}" for d, v in sorted(dists.items())]
    log.info("downloading %d wheels for %s", len(dists), platform)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pip download failed (offline? wheels must come from PyPI):\n{res.stderr[-2000:]}")
    wheels = []
    for dist, version in sorted(dists.items()):
        norm = dist.lower().replace("-", "_")
        matches = [w for w in target.glob("*.whl")
                   if w.name.lower().startswith(f"{norm}-{version}-".lower()) and _wheel_fits(w.name, platform)]
        if not matches:
            raise RuntimeError(f"no {platform} wheel of {dist}=={version} after pip download")
        wheels.append(sorted(matches)[-1])
    return wheels


def _wheel_fits(name: str, platform: str) -> bool:
    tag = name[:-4].split("-")[-1]
    return tag == "any" or any(t in tag for t in PLATFORM_TAGS[platform]) or \
        (platform == "linux-x64" and "manylinux" in tag and "x86_64" in tag)


def build_addon(out: Path, platforms: list[str], cache: Path, with_wheels: bool = True) -> Path:
    """Assemble the extension zip: add-on modules, vendored facemodel, models/, wheels/, manifest."""
    src = ROOT / "blender_addon"
    wheels: list[Path] = []
    if with_wheels:
        dists = runtime_distributions()
        log.info("runtime wheels: %s", ", ".join(f"{d}=={v}" for d, v in sorted(dists.items())))
        for platform in platforms:
            wheels += download_wheels(dists, platform, cache)
    version = _project_version()
    text = (src / "blender_manifest.toml").read_text()
    text = _set_toml(text, "version", f'"{version}"')
    text = _set_toml(text, "platforms", "[" + ", ".join(f'"{p}"' for p in platforms) + "]")
    text = _set_toml(text, "wheels", "[\n" + "".join(f'  "./wheels/{w.name}",\n' for w in wheels) + "]")
    tomllib.loads(text)  # still valid TOML
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if f.is_dir() or set(rel.parts) & ADDON_FILES_EXCLUDE or f.suffix == ".pyc":
                continue
            if rel.name == "blender_manifest.toml":
                continue
            zf.write(f, rel.as_posix())
        zf.writestr("blender_manifest.toml", text)
        for f in sorted((ROOT / "facemodel").rglob("*.py")):
            zf.write(f, ("facemodel" / f.relative_to(ROOT / "facemodel")).as_posix())
        for w in wheels:
            zf.write(w, f"wheels/{w.name}", compress_type=zipfile.ZIP_STORED)
        zf.writestr("LICENSE", (ROOT / "LICENSE").read_text())
    tmp.replace(out)
    if not (src / "models" / "facerig_regressor.onnx").is_file():
        log.warning("no trained regressor at blender_addon/models/facerig_regressor.onnx: the extension "
                    "will need a model path in its preferences")
    return out


def _project_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def _set_toml(text: str, key: str, value: str) -> str:
    """Replace a top-level ``key = ...`` (single- or multi-line list) in the manifest text."""
    lines = text.splitlines()
    out, skip = [], False
    for line in lines:
        if skip:
            if line.strip().endswith("]"):
                skip = False
            continue
        if line.split("=")[0].strip() == key and "=" in line:
            out.append(f"{key} = {value}")
            rhs = line.split("=", 1)[1].strip()
            skip = rhs.startswith("[") and not rhs.endswith("]")
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def cmd_addon_build(args: argparse.Namespace) -> int:
    platforms = args.platform or ["linux-x64"]
    t = time.perf_counter()
    path = build_addon(args.out, platforms, args.wheel_cache, with_wheels=not args.no_wheels)
    size = path.stat().st_size / 1e6
    print(f"extension written to {path} ({size:.1f} MB, {', '.join(platforms)}, {time.perf_counter() - t:.0f} s)")
    return 0


__all__ = ["register", "build_addon", "output_paths", "render_sheet"]
