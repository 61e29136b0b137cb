"""Render a reconstructed head in the poses an artist checks first, as one contact sheet (PNG).

    python scripts/render_rig_views.py PHOTO -o sheet.png [--engine workbench|cycles] [--size 260]

Panels: front, 3/4 and profile (rest pose, the photo's expression), the head bone turned 40°, the neck
bone bent 40° forward, the closed mouth up close (neutral expression; the teeth must not show), and, for
comparison, the mouth half open. Workbench (default) takes a few seconds; Cycles (16 samples, the
head's own materials, two lights) about a minute on two cores. docs/addon-rig.md shows the result.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("photo", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--engine", choices=("workbench", "cycles"), default="workbench")
    p.add_argument("--size", type=int, default=260, help="panel width in pixels")
    p.add_argument("--model", type=Path, help="ONNX regressor (default: the shipped one)")
    p.add_argument("--palette", action="store_true", help="write a 256-colour PNG (small, for docs/images)")
    args = p.parse_args(argv)

    import bpy
    import cv2
    from mathutils import Matrix, Vector

    from blender_addon.armature import bone_basis_rotation, rest_pose
    from blender_addon.build_mesh import BuildOptions, build_face
    from blender_addon.expression import apply_photo_expression, find_head, neutral_expression, set_key_values
    from runtime.pipeline import load_face_model, reconstruct_photo

    bpy.ops.wm.read_factory_settings(use_empty=True)
    model = load_face_model(None)
    recon = reconstruct_photo(args.photo, model=str(args.model) if args.model else None, face_model=model)
    result = build_face(model, recon, BuildOptions(texture_size=1024, name="Head"), bpy.context)
    rig = find_head(result.mesh_object)
    arm = rig.arm
    rest_pose(arm)
    scene = bpy.context.scene
    _setup_render(scene, args.engine, args.size)
    cam = bpy.data.objects.new("sheet_camera", bpy.data.cameras.new("sheet_camera"))
    cam.data.lens = 85
    scene.collection.objects.link(cam)
    scene.camera = cam
    origin = Vector(arm.location)

    def turn(bone: str, axis: str, degrees: float) -> None:
        pb = arm.pose.bones[bone]
        pb.rotation_quaternion = bone_basis_rotation(pb, Matrix.Rotation(math.radians(degrees), 3, axis))

    def shoot(label: str, yaw: float, pitch: float = 0.0, distance: float = 1.1,
              target: tuple[float, float, float] = (0.0, 0.0, -0.02)) -> np.ndarray:
        aim = origin + Vector(target)
        direction = Vector((math.sin(math.radians(yaw)), -math.cos(math.radians(yaw)), math.sin(math.radians(pitch))))
        cam.location = aim + direction.normalized() * distance
        cam.rotation_euler = (aim - cam.location).to_track_quat("-Z", "Y").to_euler()
        bpy.context.view_layer.update()
        path = args.out.with_suffix(".panel.png")
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        img = cv2.imread(str(path))
        path.unlink()
        cv2.putText(img, label, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
        return img

    apply_photo_expression(rig)
    panels = [shoot("front", 0), shoot("3/4", 40), shoot("profile", 90)]
    turn("head", "Z", 40)
    panels.append(shoot("head bone turned 40", 20))
    rest_pose(arm)
    turn("neck", "X", 40)
    panels.append(shoot("neck bone bent 40 fwd", 70, distance=1.25, target=(0.0, -0.04, -0.07)))
    rest_pose(arm)
    neutral_expression(rig)
    panels.append(shoot("closed mouth", 0, -8, distance=0.32, target=(0.0, 0.0, -0.035)))
    set_key_values(rig, {"jawOpen": 0.35})
    panels.append(shoot("jaw bone = jawOpen 0.35", 0, -8, distance=0.32, target=(0.0, 0.0, -0.035)))
    set_key_values(rig, {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0, "mouthSmileLeft": 0.8, "mouthSmileRight": 0.8,
                         "jawOpen": 0.0})
    panels.append(shoot("blink + smile", 0, distance=0.6, target=(0.0, 0.0, 0.0)))
    while len(panels) % 4:
        panels.append(np.zeros_like(panels[0]))
    rows = [np.concatenate(panels[i:i + 4], 1) for i in range(0, len(panels), 4)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet = np.concatenate(rows, 0)
    if args.palette:
        from PIL import Image

        Image.fromarray(sheet[..., ::-1]).quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    else:
        cv2.imwrite(str(args.out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out}")
    return 0


def _setup_render(scene, engine: str, size: int) -> None:
    import bpy

    scene.render.resolution_x, scene.render.resolution_y = size, int(size * 1.2)
    scene.render.resolution_percentage = 100
    if engine == "workbench":
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "TEXTURE"
        scene.display.shading.show_cavity = False
        return
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    if scene.world is None:
        scene.world = bpy.data.worlds.new("sheet_world")
    scene.world.color = (0.25, 0.25, 0.27)
    for name, loc, energy in (("key", (0.6, -1.2, 0.6), 60.0), ("fill", (-0.9, -0.8, 0.2), 25.0)):
        light = bpy.data.objects.new(name, bpy.data.lights.new(name, "AREA"))
        light.data.energy, light.data.size = energy, 0.6
        light.location = loc
        light.rotation_euler = (math.radians(60), 0, math.atan2(loc[0], -loc[1]))
        scene.collection.objects.link(light)


if __name__ == "__main__":
    sys.exit(main())
