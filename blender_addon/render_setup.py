"""A scene that renders: a soft grey World and a three-point light rig, only where the scene has none.

A scene made with ``read_factory_settings(use_empty=True)`` (the CLI) or a new empty file has no World
and no lights, so F12 renders a black head. The reconstruction therefore adds

* a World (``WORLD_NAME``, reused when the file already has it) with a uniform grey background: soft,
  shadowless ambient light and a neutral backdrop, no HDRI file needed — only when the scene has no World;
* a key, a fill and a rim area light in their own collection (``LIGHTS_COLLECTION``), aimed at the head
  from the front (−Y, where a head at rest looks), the key high on the camera's left — only when the scene
  has no light object at all.

An artist's World or lights are never changed: a scene that has one keeps it as it is. The energies are
set so that a frontal surface lit by all of them together receives about the irradiance of a white
World of strength 1, i.e. a texture renders at roughly its own brightness (docs/addon-look.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np
from mathutils import Vector

WORLD_NAME = "FaceRig World"
LIGHTS_COLLECTION = "FaceRig Lights"
WORLD_GREY = 0.3                  # background colour (linear) and the ambient light it gives


@dataclass(frozen=True)
class LightSpec:
    """One area light of the rig, placed on a sphere around the head."""

    name: str
    azimuth_deg: float            # 0 = in front of the face (−Y); + = towards −X (the camera's left)
    elevation_deg: float
    distance_m: float
    size_m: float
    power_w: float
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)


THREE_POINT = (
    LightSpec("Key", 40.0, 30.0, 1.2, 0.6, 12.0, (1.0, 0.96, 0.92)),
    LightSpec("Fill", -50.0, 10.0, 1.4, 1.0, 5.0, (0.92, 0.96, 1.0)),
    LightSpec("Rim", 160.0, 35.0, 1.2, 0.4, 8.0),
)


@dataclass
class RenderSetup:
    """What :func:`ensure_render_setup` made (nothing when the scene had its own world and lights)."""

    world: Any = None             # the World now on the scene when this call set it, else None
    world_created: bool = False   # a new World datablock (False: ours reused, or the scene had one)
    lights: list[Any] = field(default_factory=list)


def evaluated_world_vertices(obj: Any) -> np.ndarray:
    """(V, 3) world positions of ``obj``'s vertices as they render (shape keys, armature, pose)."""
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    m = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]


def object_centre(obj: Any) -> Vector:
    """World-space centre of ``obj``'s bounding box (as last evaluated): where the lights aim."""
    local = sum((Vector(corner) for corner in obj.bound_box), Vector((0.0, 0.0, 0.0))) / 8.0
    return obj.matrix_world @ local


def scene_has_lights(scene: Any) -> bool:
    """Any light object in the scene (in any of its collections, hidden or not)."""
    return any(obj.type == "LIGHT" for obj in scene.objects)


def _grey_world(name: str) -> Any:
    world = bpy.data.worlds.new(name)
    if bpy.app.version < (5, 0, 0):  # 5.0: worlds always have node trees
        world.use_nodes = True
    world.color = (WORLD_GREY,) * 3
    background = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
    if background is None:
        background = world.node_tree.nodes.new("ShaderNodeBackground")
        output = next((n for n in world.node_tree.nodes if n.type == "OUTPUT_WORLD"), None) \
            or world.node_tree.nodes.new("ShaderNodeOutputWorld")
        world.node_tree.links.new(background.outputs["Background"], output.inputs["Surface"])
    background.inputs["Color"].default_value = (WORLD_GREY, WORLD_GREY, WORLD_GREY, 1.0)
    background.inputs["Strength"].default_value = 1.0
    return world


def light_position(spec: LightSpec, target: Vector) -> Vector:
    """World position of ``spec`` around ``target`` (front = −Y, up = +Z)."""
    az, el = math.radians(spec.azimuth_deg), math.radians(spec.elevation_deg)
    direction = Vector((-math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)))
    return target + direction * spec.distance_m


def _add_light(created: Any, collection: Any, spec: LightSpec, target: Vector, prefix: str) -> Any:
    data = created.add(bpy.data.lights, bpy.data.lights.new(f"{prefix}{spec.name}", "AREA"))
    data.shape = "DISK"
    data.size = spec.size_m
    data.energy = spec.power_w
    data.color = spec.colour
    obj = created.add(bpy.data.objects, bpy.data.objects.new(f"{prefix}{spec.name}", data))
    obj.location = light_position(spec, target)
    obj.rotation_euler = (target - obj.location).to_track_quat("-Z", "Y").to_euler()
    collection.objects.link(obj)
    return obj


def ensure_render_setup(created: Any, scene: Any, target: Vector, rig: tuple[LightSpec, ...] = THREE_POINT,
                        prefix: str = "FaceRig ") -> RenderSetup:
    """Give ``scene`` a World and lights aimed at ``target`` where it has none; never touch existing ones.

    ``created`` records new datablocks (``add(collection, block)``) so a failed build removes them.
    """
    setup = RenderSetup()
    if scene.world is None:
        world = bpy.data.worlds.get(WORLD_NAME)
        if world is None:
            world = created.add(bpy.data.worlds, _grey_world(WORLD_NAME))
            setup.world_created = True
        scene.world = setup.world = world
    if not scene_has_lights(scene):
        collection = created.add(bpy.data.collections, bpy.data.collections.new(LIGHTS_COLLECTION))
        scene.collection.children.link(collection)
        setup.lights = [_add_light(created, collection, spec, target, prefix) for spec in rig]
    return setup
