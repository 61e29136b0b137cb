"""Render a reconstructed head as F12 does: front, 3/4 and profile, neutral, blinking and smiling.

    .venv/bin/python examples/render_head.py /path/to/photo.jpg -o head_sheet.png
    .venv/bin/python examples/render_head.py photo.jpg -o sheet.png --engine cycles --size 256 --samples 16
    .venv/bin/python examples/render_head.py photo.jpg -o row.png --row --expressions neutral,smile

``--row`` makes the README's one-row picture instead of the grid: the photo, then every view of the first
expression, then the front view of each further expression (photo | front | 3/4 | profile | smile).

The photo goes through the same path as ``facerig reconstruct`` (detection, regression, refinement,
``build_face`` in a new empty scene, which gets the add-on's World and light rig), then a camera is put
in front of, at 35° and at 90° to the head's face and each view is rendered with the scene's own render
engine settings, lights and World, with the expression's shape keys at 1 (eyeBlink*, mouthSmile*; ICT
and ARKit names alike). Writes a contact sheet (rows: expressions, columns: views) and, with
``--blend``, the scene. EEVEE runs without a display through Mesa on CPU-only machines: expect
a minute or two of shader compilation before the first frame (docs/addon-look.md has timings).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:      # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("render_head")

VIEWS = {"front": 0.0, "3/4": 35.0, "profile": 90.0}
EXPRESSIONS = {"neutral": (), "blink": ("eyeBlink",), "smile": ("mouthSmile",)}
ENGINES = {"eevee": ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT"), "cycles": ("CYCLES",),
           "workbench": ("BLENDER_WORKBENCH",)}
LENS_MM = 85.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("photo", type=Path)
    p.add_argument("-o", "--out", type=Path, default=Path("head_sheet.png"), help="contact sheet PNG")
    p.add_argument("--engine", choices=sorted(ENGINES), default="eevee")
    p.add_argument("--size", type=int, default=256, help="pixels per picture (square)")
    p.add_argument("--samples", type=int, default=16, help="render samples (EEVEE and Cycles)")
    p.add_argument("--views", default="front,3/4,profile", help=f"comma-separated, of {', '.join(VIEWS)}")
    p.add_argument("--expressions", default="neutral,blink,smile",
                   help=f"comma-separated, of {', '.join(EXPRESSIONS)}")
    p.add_argument("--texture-size", type=int, default=1024)
    p.add_argument("--remove-lighting", action="store_true", help="as facerig reconstruct --remove-lighting")
    p.add_argument("--row", action="store_true",
                   help="one row: the photo, every view of the first expression, the front of the others")
    p.add_argument("--blend", type=Path, help="also save the scene here")
    p.add_argument("--face", type=int, default=None, help="face index in the photo (default: the largest)")
    return p.parse_args(argv)


def build_head(args: argparse.Namespace):
    """The photo through the ``facerig reconstruct`` path; returns the reconstruction and the build result."""
    from runtime.pipeline import reconstruct_photo
    from facerig_cli.reconstruct import build_in_blender

    recon = reconstruct_photo(args.photo, args.face)
    build_args = argparse.Namespace(face_model=None, texture_size=args.texture_size,
                                    remove_lighting=args.remove_lighting, no_armature=False, no_camera=False,
                                    shape_key_names="arkit", no_teeth=False)
    result, _ = build_in_blender(recon, build_args)
    return recon, result


def head_frame(mesh_object, model) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Centre, right, up and forward axes (world) and size (m) of the posed head, from its evaluated mesh
    (so a pose on the object or on the bones both count): eye corners, chin, nose tip."""
    from blender_addon.render_setup import evaluated_world_vertices

    co = evaluated_world_vertices(mesh_object)
    lm = co[model.landmarks68]
    right = lm[45] - lm[36]
    right /= np.linalg.norm(right)
    up = 0.5 * (lm[36] + lm[45]) - lm[8]
    up -= right * (up @ right)
    up /= np.linalg.norm(up)
    forward = np.cross(right, up)
    if (lm[30] - 0.5 * (lm[36] + lm[45])) @ forward < 0:
        forward = -forward
    skin = co[model.material_vertices("M_Face", "M_BackHead")]
    centre = 0.5 * (skin.min(0) + skin.max(0))
    size = float(np.linalg.norm(skin.max(0) - skin.min(0))) / math.sqrt(3.0)
    return centre, right, up, forward, size


def place_camera(camera, centre: np.ndarray, right: np.ndarray, up: np.ndarray, forward: np.ndarray,
                 size: float, yaw_deg: float) -> None:
    """Camera on the circle around the head's up axis, ``yaw_deg`` from the front (towards the head's
    left side), framing a head ``size`` high."""
    from mathutils import Matrix

    a = math.radians(yaw_deg)
    back = math.cos(a) * forward + math.sin(a) * right       # from the head towards the camera
    fov = 2 * math.atan(camera.data.sensor_width / (2 * LENS_MM))
    distance = 0.62 * size / math.tan(fov / 2)
    eye = centre + back * distance + up * 0.02 * size
    x = np.cross(up, back)
    rot = np.stack([x, up, back], 1)
    mat = Matrix([[*rot[0], eye[0]], [*rot[1], eye[1]], [*rot[2], eye[2]], [0, 0, 0, 1]])
    camera.matrix_world = mat


def set_expression(mesh_object, prefixes: tuple[str, ...]) -> None:
    """Every shape key at 0, those whose name starts with one of ``prefixes`` at 1."""
    for key in mesh_object.data.shape_keys.key_blocks[1:]:
        key.value = 1.0 if any(key.name.startswith(p) for p in prefixes) else 0.0


def configure_engine(scene, engine: str, size: int, samples: int) -> None:
    for identifier in ENGINES[engine]:   # EEVEE's identifier changed in Blender 4.2 and back in 5.0
        try:
            scene.render.engine = identifier
            break
        except TypeError:
            continue
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    if engine == "cycles":
        scene.cycles.samples = samples
        scene.cycles.device = "CPU"
        scene.cycles.use_denoising = True
    elif engine == "eevee":
        scene.eevee.taa_render_samples = samples


def shots(expressions: list[str], views: list[str], row: bool) -> list[tuple[str, str]]:
    """The (expression, view) pairs to render: all of them for the grid; for ``--row`` every view of the
    first expression and the first view of the others."""
    if not row:
        return [(e, v) for e in expressions for v in views]
    return [(expressions[0], v) for v in views] + [(e, views[0]) for e in expressions[1:]]


def render_views(result, model, args: argparse.Namespace, folder: Path) -> dict[tuple[str, str], np.ndarray]:
    """The shots of ``shots()`` rendered to ``folder``; returns the pictures as uint8 RGB."""
    import bpy
    import cv2

    scene = bpy.context.scene
    configure_engine(scene, args.engine, args.size, args.samples)
    cam_data = bpy.data.cameras.new("SheetCamera")
    cam_data.lens = LENS_MM
    camera = bpy.data.objects.new("SheetCamera", cam_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    pictures = {}
    wanted = shots(args.expressions, args.views, args.row)
    for expression in args.expressions:
        set_expression(result.mesh_object, EXPRESSIONS[expression])
        frame = head_frame(result.mesh_object, model)
        for view in args.views:
            if (expression, view) not in wanted:
                continue
            place_camera(camera, *frame, VIEWS[view])
            path = folder / f"{expression}_{view.replace('/', '-')}.png"
            scene.render.filepath = str(path)
            scene.render.image_settings.file_format = "PNG"
            t = time.perf_counter()
            bpy.ops.render.render(write_still=True)
            log.info("%s %s: %.1f s", expression, view, time.perf_counter() - t)
            pictures[expression, view] = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return pictures


def labelled(pic: np.ndarray, text: str) -> np.ndarray:
    import cv2

    pic = pic.copy()
    cv2.putText(pic, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return pic


def contact_sheet(pictures: dict[tuple[str, str], np.ndarray], expressions: list[str], views: list[str]) -> np.ndarray:
    """Rows = expressions, columns = views, each labelled."""
    rows = [np.concatenate([labelled(pictures[e, v], f"{e}, {v}") for v in views], 1) for e in expressions]
    return np.concatenate(rows, 0)


def photo_square(image: np.ndarray, crop_box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The photo around the face: a square 1.25 × the canonical crop (shifted, then shrunk, to stay inside
    the photo), resized to ``size``."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = crop_box
    side = min(1.25 * max(x1 - x0, y1 - y0), w, h)
    left = min(max(0.5 * (x0 + x1) - side / 2, 0), w - side)
    top = min(max(0.5 * (y0 + y1) - side / 2, 0), h - side)
    square = image[int(top):int(top + side), int(left):int(left + side)]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def picture_row(photo: np.ndarray, pictures: dict[tuple[str, str], np.ndarray],
                order: list[tuple[str, str]]) -> np.ndarray:
    """``--row``: the photo, then the shots in ``order``, each labelled."""
    cells = [labelled(photo, "photo")]
    cells += [labelled(pictures[e, v], v if e == order[0][0] else f"{e}, {v}") for e, v in order]
    return np.concatenate(cells, 1)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(argv)
    args.views = [v.strip() for v in args.views.split(",")]
    args.expressions = [e.strip() for e in args.expressions.split(",")]
    unknown = [v for v in args.views if v not in VIEWS] + [e for e in args.expressions if e not in EXPRESSIONS]
    if unknown:
        print(f"render_head.py: error: unknown view/expression {', '.join(unknown)}", file=sys.stderr)
        return 2
    import bpy
    import cv2

    from runtime.pipeline import load_face_model

    t = time.perf_counter()
    recon, result = build_head(args)
    model = load_face_model(None)
    log.info("reconstructed in %.1f s", time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        pictures = render_views(result, model, args, Path(tmp))
    if args.row:
        photo = photo_square(recon.image, recon.crop_box, args.size)
        sheet = picture_row(photo, pictures, shots(args.expressions, args.views, True))
    else:
        sheet = contact_sheet(pictures, args.expressions, args.views)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if args.blend:
        set_expression(result.mesh_object, ())
        bpy.ops.wm.save_as_mainfile(filepath=str(args.blend.resolve()), compress=True)
    print(f"{args.out} ({len(pictures)} pictures, {args.engine}, {time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
