"""The head's materials, one per ICT material name (``model.material_names``): skin from the baked
photo texture, eyes from the baked eye textures and the iris colour, alpha-textured eyelashes, and
ICT's overlay materials (tear line, eye blend, eye occlusion) invisible.

Materials are made and returned by name (:func:`head_materials`), so whichever objects the head is
made of — one mesh, or skin, eyes, teeth and lashes split into several — each gets the slots its
polygons' ``face_material`` names. Render methods: EEVEE (Blender ≥ 4.2) uses
``surface_render_method`` — ``DITHERED`` for the lashes (sorted per pixel, casts light-through
shadows), ``BLENDED`` for the invisible overlays; Cycles takes the Principled BSDF's alpha as it is.
"""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np

from .rt import facemodel, load

lashes = load("lashes")
LASH_MATERIAL = lashes.LASH_MATERIAL

PACK_ON_SAVE = "facerig_pack_on_save"   # export.pack_generated_images packs these before a save
LASH_TEXTURE_SIZE = 512

# Plain colours (linear) for the parts the photo cannot texture.
MATERIAL_COLOURS = {
    "M_GumsTongue": (0.55, 0.18, 0.18), "M_Teeth": (0.85, 0.82, 0.74), "M_ScleraLeft": (0.85, 0.83, 0.80),
    "M_ScleraRight": (0.85, 0.83, 0.80), LASH_MATERIAL: (0.01, 0.008, 0.007),
}
TRANSPARENT = set(facemodel.model.OVERLAY_MATERIALS)
ROUGHNESS = {"M_ScleraLeft": 0.15, "M_ScleraRight": 0.15, "M_IrisLeft": 0.3, "M_IrisRight": 0.3,
             "M_Face": 0.5, "M_BackHead": 0.5, LASH_MATERIAL: 0.45, "M_Teeth": 0.3}


def image_from_array(created: Any, name: str, pixels_bottom_up: np.ndarray) -> Any:
    """An sRGB image from uint8 RGB or RGBA in Blender pixel order (row 0 = bottom)."""
    h, w, channels = pixels_bottom_up.shape
    img = created.add(bpy.data.images, bpy.data.images.new(name, width=w, height=h, alpha=channels == 4))
    px = np.ones((h * w, 4), np.float32)
    px[:, :channels] = pixels_bottom_up.reshape(-1, channels)
    px[:, :channels] *= 1.0 / 255.0
    img.pixels.foreach_set(px.ravel())
    img.file_format = "PNG"
    if channels == 4:
        img.alpha_mode = "STRAIGHT"
    img[PACK_ON_SAVE] = True  # packing costs ~90 ms per image: done when saving
    return img


def _principled(mat: Any) -> Any:
    if bpy.app.version < (5, 0, 0):  # 5.0: materials always have node trees; the flag is deprecated
        mat.use_nodes = True
    nodes = mat.node_tree.nodes
    bsdf = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None) or nodes.new("ShaderNodeBsdfPrincipled")
    return bsdf


def _render_method(mat: Any, method: str) -> None:
    """EEVEE's transparency: ``surface_render_method`` (4.2+), else the legacy ``blend_method``."""
    if hasattr(mat, "surface_render_method"):
        mat.surface_render_method = method
    elif hasattr(mat, "blend_method"):
        mat.blend_method = {"DITHERED": "HASHED", "BLENDED": "BLEND"}[method]


def make_material(created: Any, name: str, colour: tuple[float, float, float] = (0.8, 0.8, 0.8),
                  image: Any = None, transparent: bool = False, roughness: float = 0.6,
                  image_alpha: bool = False) -> Any:
    """A Principled material: ``colour`` or ``image`` as base colour; ``image_alpha`` also takes the
    image's alpha (dithered in EEVEE); ``transparent`` makes it invisible (ICT's overlays)."""
    mat = created.add(bpy.data.materials, bpy.data.materials.new(name))
    bsdf = _principled(mat)
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    mat.diffuse_color = (*colour, 1.0)
    if image is not None:
        tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
        tex.image = image
        tex.location = (-400, 200)
        mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        if image_alpha:
            mat.node_tree.links.new(tex.outputs["Alpha"], bsdf.inputs["Alpha"])
            _render_method(mat, "DITHERED")
            if hasattr(mat, "use_transparent_shadow"):
                mat.use_transparent_shadow = True
    if transparent:
        bsdf.inputs["Alpha"].default_value = 0.0
        mat.diffuse_color = (*colour, 0.0)
        _render_method(mat, "BLENDED")
    return mat


def linear_from_srgb(rgb: np.ndarray) -> tuple[float, float, float]:
    """sRGB [0, 1] → linear (Blender's colour inputs are linear)."""
    lin = facemodel.lighting.srgb_decode(np.clip(np.asarray(rgb, np.float32), 0.0, 1.0))
    return tuple(float(c) for c in lin)


def head_materials(created: Any, prefix: str, model: "facemodel.FaceModel", images: dict[str, Any],
                   iris_srgb: np.ndarray) -> dict[str, Any]:
    """One material per name in ``model.material_names`` (``{prefix}_{name}``), keyed by that name.

    ``images``: material name → Blender image (the baked skin and eye textures); the lash texture is
    made here. ``iris_srgb`` colours the iris materials' base (their textures carry it too).
    """
    iris = linear_from_srgb(iris_srgb)
    lash_image = image_from_array(created, f"{prefix}_{LASH_MATERIAL}", lashes.lash_texture(model, LASH_TEXTURE_SIZE))
    out = {}
    for name in model.material_names:
        colour = iris if name.startswith("M_Iris") else MATERIAL_COLOURS.get(name, (0.8, 0.8, 0.8))
        is_lash = name == LASH_MATERIAL
        out[name] = make_material(created, f"{prefix}_{name}", colour=colour,
                                  image=lash_image if is_lash else images.get(name),
                                  transparent=name in TRANSPARENT, roughness=ROUGHNESS.get(name, 0.6),
                                  image_alpha=is_lash)
    return out
