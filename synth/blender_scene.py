"""All bpy work of the corpus renderer: one persistent Blender scene per worker process.

Import this module only in worker processes (it imports bpy). The scene holds one mesh with
the fixed ICT render topology (``FaceModel.render_triangles``, i.e. without the transparent
overlay materials); per frame only vertex positions and a float colour attribute are replaced
with ``foreach_set`` — no mesh rebuilds, so memory stays flat and updates cost ~2 ms.

Shading is done by facemodel (per-vertex SH × albedo, linear RGB) and Blender only
rasterises it unlit: Workbench with ``light='FLAT'`` and ``color_type='VERTEX'``, or Cycles
with an Emission shader reading the attribute. The camera is facemodel's perspective camera
(:func:`facemodel.camera.blender_camera`) at the origin with identity rotation, so Blender
camera space is our camera space and model coordinates (cm) are passed through unchanged.

Frames are written to an uncompressed multilayer EXR (Combined RGBA + Depth) in a RAM
directory and read back with :mod:`synth.exr`: headless Blender offers no in-memory access
to render passes, and the linear float colour lets the caller composite and sRGB-encode with
facemodel's own :func:`facemodel.lighting.srgb_encode`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import bpy
import numpy as np

from facemodel.camera import blender_camera

from .exr import read_exr

log = logging.getLogger(__name__)

ENGINES = {"workbench": "BLENDER_WORKBENCH", "cycles": "CYCLES"}  # CLI name → Blender engine
COLOR_ATTRIBUTE = "facerig_color"
CLIP_START_CM, CLIP_END_CM = 5.0, 5000.0


@dataclass(frozen=True)
class SceneSettings:
    """Everything that fixes how a frame is rasterised (recorded in the corpus manifest)."""

    size: int = 128
    engine: str = "workbench"
    supersample: int = 1        # render at size·k and area-downsample: cheap anti-aliasing
    workbench_aa: str = "OFF"   # scene.display.render_aa: OFF, FXAA, 5, 8, 11, 16, 32
    cycles_samples: int = 8
    backface_culling: bool = True  # safe only for closed meshes (see synth.labels.draw_polygons)


@dataclass
class Frame:
    """One rasterised frame at render resolution (size · supersample)."""

    rgba: np.ndarray   # (H, W, 4) float32, linear RGB premultiplied by alpha
    depth: np.ndarray  # (H, W) float32 distance along the view axis (cm); huge where empty


@contextlib.contextmanager
def _null_context() -> Iterator[None]:
    yield


def _no_timer(stage: str) -> contextlib.AbstractContextManager:
    return _null_context()


def _scratch_dir(parent: Path | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="facerig-synth-", dir=parent))


class FaceScene:
    """A reusable Blender scene: call :meth:`render` once per face."""

    def __init__(self, polygons: np.ndarray, n_vertices: int, settings: SceneSettings,
                 scratch_parent: Path | None = None) -> None:
        """``polygons`` (F, 4) vertex indices, triangles padded with −1 (ICT's own quads);
        frames go to a fresh directory under ``scratch_parent`` (RAM, ideally)."""
        if settings.engine not in ENGINES:
            raise ValueError(f"unknown engine {settings.engine!r}; choose from {sorted(ENGINES)}")
        self.settings = settings
        self.n_vertices = int(n_vertices)
        self.res = int(settings.size * settings.supersample)
        self.scratch = _scratch_dir(scratch_parent)
        self.frame_path = self.scratch / "frame.exr"
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = bpy.context.scene
        self._build_mesh(np.asarray(polygons, np.int64))
        self._build_camera()
        self._configure_render()
        self._camera_key: tuple[float, ...] | None = None
        self._rgba = np.ones((self.n_vertices, 4), np.float32)
        self.timings = _no_timer  # replaced by the caller's stage timer when benchmarking

    # -- construction ------------------------------------------------------------------------
    def _build_mesh(self, polygons: np.ndarray) -> None:
        """Quads stay quads: Blender draws one GPU vertex per face corner, so quads (4 corners
        instead of 2 × 3) cut vertex work by a third; it splits them along the same diagonal
        as ``facemodel.geometry.triangulate`` (0-1-2, 0-2-3), so the surface is the same."""
        me = bpy.data.meshes.new("face")
        valid = polygons >= 0
        counts = valid.sum(1)
        corners = polygons[valid]
        n_poly = len(polygons)
        me.vertices.add(self.n_vertices)
        me.loops.add(len(corners))
        me.polygons.add(n_poly)
        me.loops.foreach_set("vertex_index", corners.astype(np.int32))
        me.polygons.foreach_set("loop_start", np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32))
        me.update(calc_edges=True)
        # Flat faces: Blender then skips vertex-normal accumulation on every frame (unlit
        # rendering needs no normals; shading comes from facemodel's vertex colours).
        sharp = me.attributes.new("sharp_face", "BOOLEAN", "FACE")
        sharp.data.foreach_set("value", np.ones(n_poly, bool))
        attr = me.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
        me.color_attributes.active_color = attr
        me.color_attributes.render_color_index = me.color_attributes.find(COLOR_ATTRIBUTE)
        obj = bpy.data.objects.new("face", me)
        self.scene.collection.objects.link(obj)
        if self.settings.engine == "cycles":
            mat = bpy.data.materials.new("vertex_emission")
            mat.use_nodes = True
            nodes, links = mat.node_tree.nodes, mat.node_tree.links
            nodes.clear()
            col = nodes.new("ShaderNodeAttribute")
            col.attribute_name = COLOR_ATTRIBUTE
            emit = nodes.new("ShaderNodeEmission")
            emit.inputs["Strength"].default_value = 1.0
            out = nodes.new("ShaderNodeOutputMaterial")
            links.new(col.outputs["Color"], emit.inputs["Color"])
            links.new(emit.outputs["Emission"], out.inputs["Surface"])
            me.materials.append(mat)
        self.mesh, self.obj = me, obj

    def _build_camera(self) -> None:
        cam = bpy.data.cameras.new("camera")
        cam.clip_start, cam.clip_end = CLIP_START_CM, CLIP_END_CM
        obj = bpy.data.objects.new("camera", cam)
        obj.location = (0.0, 0.0, 0.0)
        obj.rotation_euler = (0.0, 0.0, 0.0)
        self.scene.collection.objects.link(obj)
        self.scene.camera = obj
        self.camera = cam

    def _configure_render(self) -> None:
        sc, s = self.scene, self.settings
        r = sc.render
        r.engine = ENGINES[s.engine]
        r.resolution_x = r.resolution_y = self.res
        r.resolution_percentage = 100
        r.pixel_aspect_x = r.pixel_aspect_y = 1.0
        r.film_transparent = True
        r.dither_intensity = 0.0
        r.use_compositing = False
        r.use_sequencer = False
        r.use_persistent_data = True
        sc.view_settings.view_transform = "Standard"
        sc.view_settings.look = "None"
        sc.view_settings.exposure = 0.0
        sc.view_settings.gamma = 1.0
        sc.display_settings.display_device = "sRGB"
        vl = sc.view_layers[0]
        vl.use_pass_combined = True
        vl.use_pass_z = True
        img = r.image_settings
        img.media_type = "MULTI_LAYER_IMAGE"
        img.file_format = "OPEN_EXR_MULTILAYER"
        img.color_depth = "32"
        img.exr_codec = "NONE"
        img.color_mode = "RGBA"
        r.filepath = str(self.frame_path)
        r.use_file_extension = False
        if s.engine == "workbench":
            sh = sc.display.shading
            sh.light = "FLAT"
            sh.color_type = "VERTEX"
            sh.show_object_outline = False
            sh.show_cavity = False
            sh.show_shadows = False
            sh.show_specular_highlight = False
            sh.show_xray = False
            sh.use_dof = False
            sh.show_backface_culling = s.backface_culling
            sc.display.render_aa = s.workbench_aa
        else:
            cy = sc.cycles
            cy.device = "CPU"
            cy.samples = int(s.cycles_samples)
            cy.use_adaptive_sampling = False
            cy.use_denoising = False
            cy.max_bounces = 0
            cy.diffuse_bounces = cy.glossy_bounces = cy.transmission_bounces = 0
            cy.volume_bounces = cy.transparent_max_bounces = 0
            cy.caustics_reflective = cy.caustics_refractive = False
            cy.pixel_filter_type = "BOX"
            cy.filter_width = 1.0
            cy.seed = 0
            cy.use_animated_seed = False
            r.threads_mode = "FIXED"
            r.threads = 1

    # -- per frame ---------------------------------------------------------------------------
    def set_camera(self, camera: np.ndarray) -> None:
        key = tuple(float(v) for v in np.asarray(camera).reshape(3))
        if key == self._camera_key:
            return
        bc = blender_camera(np.asarray(key), self.res, self.res)
        cam = self.camera
        cam.sensor_fit = bc.sensor_fit
        cam.sensor_width = bc.sensor_width_mm
        cam.lens = bc.lens_mm
        cam.shift_x, cam.shift_y = bc.shift_x, bc.shift_y
        self._camera_key = key

    def render(self, vertices: np.ndarray, colors_linear: np.ndarray, camera: np.ndarray,
               backface_culling: bool | None = None) -> Frame:
        """Rasterise one face: camera-space vertices (V, 3) cm, linear RGB (V, 3).

        ``backface_culling`` overrides the setting for this frame (Workbench only): the caller
        turns it off when the camera can look into an opening of the mesh.
        """
        self.set_camera(camera)
        cull = self.settings.backface_culling if backface_culling is None else backface_culling
        shading = self.scene.display.shading
        if self.settings.engine == "workbench" and shading.show_backface_culling != cull:
            shading.show_backface_culling = cull
        t = self.timings
        with t("blender_update"):
            # the generic attribute API: ~0.4 ms, vs ~2.3 ms for vertices.co (per-vertex RNA tagging)
            self.mesh.attributes["position"].data.foreach_set(
                "vector", np.ascontiguousarray(vertices, np.float32).reshape(-1))
            # One RNA write tags the positions as changed, so Blender's cached bounds (used for
            # frustum culling) follow the new face; the bulk write above does not tag them.
            v0 = self.mesh.vertices[0]
            v0.co = v0.co
            self._rgba[:, :3] = colors_linear
            self.mesh.color_attributes[COLOR_ATTRIBUTE].data.foreach_set("color", self._rgba.reshape(-1))
            self.mesh.update()
        with t("blender_render"):
            bpy.ops.render.render(write_still=True)
        with t("exr_read"):
            ch = read_exr(self.frame_path)
            rgba = np.stack([ch[f"ViewLayer.Combined.{c}"] for c in "RGBA"], -1)
            depth = ch.get("ViewLayer.Depth.Z")
        if depth is None:
            raise RuntimeError("Blender wrote no depth pass")
        return Frame(rgba=rgba, depth=depth)

    def close(self) -> None:
        for p in self.scratch.glob("*"):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.scratch.rmdir()
