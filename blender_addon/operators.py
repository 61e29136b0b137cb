"""Blender operators: detect faces in a photo, reconstruct one (headless-callable), preferences.

``bpy.ops.facerig.reconstruct(filepath=...)`` is the single entry point the panel, scripts and
the command line share. It is one undo step (``UNDO`` option) and all-or-nothing: errors
become Blender reports and :func:`build_mesh.build_face` removes whatever it had created.
More photos of the same person (``extra_filepaths=[{"name": path}, ...]``, or the panel's
list) make it build one head from all of them (:func:`runtime.same_person.reconstruct_same_person`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, StringProperty

from .face_model_setup import (ICT_URL, MISSING_MODEL_HELP, convert_module, install_face_model,
                               needs_online_access)
from .rt import facemodel, load

formats, limits = load("formats"), load("limits")

log = logging.getLogger(__name__)

ADDON_ID = __package__ or "blender_addon"
TEXTURE_SIZES = [("512", "512", "fast, small files"), ("1024", "1024", "default"),
                 ("2048", "2048", "detailed, slower")]

_DETECTED: dict[str, Any] = {"path": None, "faces": [], "items": []}   # the panel's face choice


def addon_prefs(context: Any) -> Any:
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def _face_items(self: Any, context: Any) -> list[tuple[str, str, str]]:
    return _DETECTED["items"] or [("-1", "Largest face", "the largest detected face")]


class FACERIG_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    regressor_path: StringProperty(  # type: ignore[valid-type]
        name="Regressor model", subtype="FILE_PATH",
        description="ONNX regressor; empty = the model shipped in the extension's models/ folder")
    face_model_path: StringProperty(  # type: ignore[valid-type]
        name="Face model", subtype="FILE_PATH",
        description="ICT-FaceKit npz; empty = $FACERIG_FACE_MODEL, then the one Download Face Model or "
                    "Choose Local File put in the add-on's data folder")
    cnet_path: StringProperty(  # type: ignore[valid-type]
        name="Confidence network", subtype="FILE_PATH",
        description="C-Net ONNX for several photos of one person; empty = $FACERIG_CNET, then the extension's "
                    "models/ folder; none found = plain averaging")

    def draw(self, context: Any) -> None:
        layout = self.layout
        box = layout.box()
        try:
            box.label(text=f"Face model: {resolve_face_model(context)}", icon="CHECKMARK")
        except facemodel.FaceModelError:
            box.label(text="Face model (ICT-FaceKit, MIT licence): not installed yet", icon="ERROR")
        row = box.row()
        row.operator(FACERIG_OT_fetch_face_model.bl_idname, icon="IMPORT")
        row.operator(FACERIG_OT_choose_face_model.bl_idname, icon="FILEBROWSER")
        if not bpy.app.online_access:
            box.label(text="Online access is off (Preferences › System › Network): download "
                           f"{ICT_URL} yourself and choose its zip", icon="INFO")
        layout.prop(self, "regressor_path")
        layout.prop(self, "face_model_path")
        layout.prop(self, "cnet_path")


def _refine_property() -> Any:
    """The panel's and the operator's *Refine on landmarks* (one definition, one description)."""
    return BoolProperty(name="Refine on landmarks", default=True,
                        description="fit expression, pose and identity to the detected facial landmarks after "
                                    "the network (≈ 12 ms; closer overlay on the photo)")


def _shape_key_names_property() -> Any:
    """The panel's and the operator's shape-key naming (ARKit's by default)."""
    return EnumProperty(name="Shape keys", default="arkit",
                        items=[("arkit", "ARKit", "Apple's ARKit blendshape names (eyeBlinkLeft, browInnerUp, …; "
                                                  "no tongueOut): Live Link Face and ARKit data apply directly"),
                               ("ict", "ICT-FaceKit", "the face model's own 53 names (eyeBlink_L, browInnerUp_L/_R, …)")])


def _remove_lighting_property() -> Any:
    """The panel's and the operator's *Remove lighting* (off: the texture shows the photo as lit)."""
    return BoolProperty(name="Remove lighting", default=False,
                        description="divide the photo's light and shade (fitted to the face) out of the texture, so "
                                    "the head can be lit again in Blender (off: the texture shows the photo as lit)")


class FaceRigPhotoPath(bpy.types.PropertyGroup):
    """One more photo of the same person; its path is ``name`` (as in the file browser's ``files``,
    and because Blender turns ``[{"name": path}, ...]`` into a collection only with that key)."""

    name: StringProperty(name="Photo", subtype="FILE_PATH")  # type: ignore[valid-type]


class FaceRigSettings(bpy.types.PropertyGroup):
    """Panel state stored on the scene."""

    filepath: StringProperty(name="Photo", subtype="FILE_PATH")  # type: ignore[valid-type]
    extra_photos: CollectionProperty(type=FaceRigPhotoPath)  # type: ignore[valid-type]
    extra_photos_index: IntProperty(default=0)  # type: ignore[valid-type]
    face: EnumProperty(name="Face", items=_face_items)  # type: ignore[valid-type]
    texture_size: EnumProperty(name="Texture", items=TEXTURE_SIZES, default="1024")  # type: ignore[valid-type]
    remove_lighting: _remove_lighting_property()  # type: ignore[valid-type]
    build_armature: BoolProperty(name="Build armature", default=True)  # type: ignore[valid-type]
    add_camera: BoolProperty(name="Add camera", default=True)  # type: ignore[valid-type]
    refine: _refine_property()  # type: ignore[valid-type]
    shape_key_names: _shape_key_names_property()  # type: ignore[valid-type]
    teeth: BoolProperty(name="Teeth", default=True, description="off: a toothless head")  # type: ignore[valid-type]


def addon_data_dir() -> Path:
    """The add-on's own writable folder: Blender's extension user directory (kept across updates of
    the extension), or — registered from a development checkout — the ``facerig`` command's cache."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID))
    except ValueError:   # not installed as an extension
        return facemodel.model.cache_dir()


def resolve_face_model(context: Any) -> str:
    """The face model to use: the preference, $FACERIG_FACE_MODEL, the add-on's data folder, then the
    command line's cache. Raises FaceModelError saying how to get one in Blender."""
    prefs = addon_prefs(context)
    if prefs and prefs.face_model_path:
        return str(facemodel.resolve_model_path(bpy.path.abspath(prefs.face_model_path)))
    installed = addon_data_dir() / facemodel.model.MODEL_FILENAME
    if not os.environ.get(facemodel.model.ENV_VAR) and installed.is_file():
        return str(installed)
    try:
        return str(facemodel.resolve_model_path(None))
    except facemodel.FaceModelError:
        if os.environ.get(facemodel.model.ENV_VAR):
            raise                                        # the variable names a missing file: say so
        raise facemodel.FaceModelError(MISSING_MODEL_HELP) from None


def _resolve_paths(context: Any, model_path: str) -> tuple[str | None, str]:
    prefs = addon_prefs(context)
    regressor = model_path or (prefs.regressor_path if prefs else "") or None
    return bpy.path.abspath(regressor) if regressor else None, resolve_face_model(context)


def _resolve_cnet(context: Any, cnet_path: str) -> str | None:
    """Operator argument, then the preference; None lets ``aggregate`` try $FACERIG_CNET and models/."""
    prefs = addon_prefs(context)
    path = cnet_path or (prefs.cnet_path if prefs else "") or None
    return bpy.path.abspath(path) if path else None


def _photo_list(main: str, extras: Any) -> list[str]:
    """Main photo first, then the extra ones; blanks and repeats dropped (a repeat would count twice)."""
    paths = [main] + [bpy.path.abspath(e.name) for e in extras if e.name]
    return list(dict.fromkeys(str(Path(p).resolve()) if p else p for p in paths))


class FACERIG_OT_detect_faces(bpy.types.Operator):
    """Find the faces in the photo so you can choose which one to reconstruct"""

    bl_idname = "facerig.detect_faces"
    bl_label = "Detect Faces"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set[str]:
        detect, photo = load("detect"), load("photo")

        settings = context.scene.facerig
        path = bpy.path.abspath(settings.filepath)
        try:
            faces = detect.detect_faces(photo.load_image(path), unconfirmed=True)
        except (OSError, ValueError, RuntimeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        items = [(str(i), f"Face {i + 1}", f.describe()) for i, f in enumerate(faces)]
        _DETECTED.update(path=path, faces=faces, items=items)
        if not faces:
            self.report({"WARNING"}, "no face found in the photo")
            return {"CANCELLED"}
        settings.face = "0"
        self.report({"INFO"}, f"{len(faces)} face(s) found" + (": choose one" if len(faces) > 1 else ""))
        return {"FINISHED"}


class FACERIG_OT_reconstruct(bpy.types.Operator):
    """Reconstruct a rigged, textured 3D face from the photo"""

    bl_idname = "facerig.reconstruct"
    bl_label = "Reconstruct Face"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Photo", subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    face_index: IntProperty(name="Face", default=-1, min=-1,  # type: ignore[valid-type]
                            description="0 = largest face; -1 = the panel's choice (largest by default)")
    texture_size: IntProperty(name="Texture size", default=0, min=0, max=limits.MAX_TEXTURE_SIZE,  # type: ignore[valid-type]
                              description="0 = the panel's setting; at most 4096 (and what the memory allows)")
    remove_lighting: _remove_lighting_property()  # type: ignore[valid-type]
    build_armature: BoolProperty(name="Build armature", default=True)  # type: ignore[valid-type]
    add_camera: BoolProperty(name="Add camera", default=True)  # type: ignore[valid-type]
    # The panel's options again (FaceRigSettings), as this operator's own: Blender declares properties per class,
    # and a headless call (`bpy.ops.facerig.reconstruct(...)`) sets them here without a panel.
    refine: _refine_property()  # type: ignore[valid-type]
    shape_key_names: _shape_key_names_property()  # type: ignore[valid-type]
    teeth: BoolProperty(name="Teeth", default=True, description="off: a toothless head")  # type: ignore[valid-type]
    model_path: StringProperty(name="Regressor", subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    extra_filepaths: CollectionProperty(  # type: ignore[valid-type]
        type=FaceRigPhotoPath, options={"SKIP_SAVE"},
        description="more photos of the same person: one head from all (the panel's list when invoked from the UI)")
    cnet_path: StringProperty(name="Confidence network", subtype="FILE_PATH",  # type: ignore[valid-type]
                              options={"SKIP_SAVE"}, description="C-Net ONNX; empty = the preference")

    def invoke(self, context: Any, event: Any) -> set[str]:
        settings = context.scene.facerig
        self.filepath = self.filepath or settings.filepath
        if not len(self.extra_filepaths):
            for extra in settings.extra_photos:
                self.extra_filepaths.add().name = extra.name
        self.build_armature, self.add_camera = settings.build_armature, settings.add_camera
        self.refine, self.remove_lighting = settings.refine, settings.remove_lighting
        self.shape_key_names, self.teeth = settings.shape_key_names, settings.teeth
        self.texture_size = self.texture_size or int(settings.texture_size)
        if self.face_index < 0 and _DETECTED["faces"] and _DETECTED["path"] == bpy.path.abspath(self.filepath):
            self.face_index = int(settings.face)
        return self.execute(context)

    def execute(self, context: Any) -> set[str]:
        from .build_mesh import BuildOptions, build_face
        pipeline, same_person = load("pipeline"), load("same_person")

        path = bpy.path.abspath(self.filepath or context.scene.facerig.filepath)
        if not path:
            self.report({"ERROR"}, "choose a photo first")
            return {"CANCELLED"}
        paths = _photo_list(path, self.extra_filepaths)
        face_index = None if self.face_index < 0 else self.face_index
        wm = context.window_manager
        wm.progress_begin(0, 100)
        t0 = time.perf_counter()
        try:
            texture_size = limits.check_texture_size(self.texture_size or int(context.scene.facerig.texture_size))
            regressor_path, face_model_path = _resolve_paths(context, self.model_path)
            wm.progress_update(5)
            model = pipeline.load_face_model(face_model_path)
            model.check_layout(pipeline.get_regressor(regressor_path).layout)
            if len(paths) > 1:   # the face choice is the main photo's; the others use their largest face
                recon = same_person.reconstruct_same_person(paths, [face_index] + [None] * (len(paths) - 1), regressor_path,
                                                _resolve_cnet(context, self.cnet_path), model, refine=self.refine)
                for warning in recon.warnings:
                    self.report({"WARNING"}, warning)
            else:
                faces = _DETECTED["faces"] if _DETECTED["path"] == path and _DETECTED["faces"] else None
                recon = pipeline.reconstruct_photo(path, face_index, regressor_path, faces=faces, refine=self.refine,
                                          face_model=model)
            wm.progress_update(30)
            options = BuildOptions(texture_size=texture_size,
                                   remove_lighting=self.remove_lighting, build_armature=self.build_armature,
                                   add_camera=self.add_camera, shape_key_names=self.shape_key_names,
                                   teeth=self.teeth, name=Path(path).stem[:40] or "Face")
            result = build_face(model, recon, options, context,
                                progress=lambda f, msg: wm.progress_update(30 + int(70 * f)))
        except (OSError, ValueError, RuntimeError, facemodel.FaceModelError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # noqa: BLE001 - a UI operator reports, never a traceback popup
            log.exception("reconstruction failed")
            self.report({"ERROR"}, f"reconstruction failed: {type(exc).__name__}: {exc} (details in the console)")
            return {"CANCELLED"}
        finally:
            wm.progress_end()
        for warning in pipeline.photo_warnings(recon):
            self.report({"WARNING"}, warning)
        for note in result.notes:
            self.report({"INFO"}, note)
        for obj in context.view_layer.objects:
            obj.select_set(False)
        result.mesh_object.select_set(True)
        context.view_layer.objects.active = result.mesh_object
        self.report({"INFO"}, f"reconstructed {result.mesh_object.name}{_describe(recon)} in "
                              f"{time.perf_counter() - t0:.2f} s")
        log.info("timings photo %s build %s", recon.timings, result.timings)
        return {"FINISHED"}


def _describe(recon: Any) -> str:
    """What the report adds after the object's name: photo count or the face choice."""
    photos = getattr(recon, "photos", None)
    if photos is not None:
        flagged = int(recon.outliers.sum())
        return (f" from {len(photos)} photos (C-Net {recon.cnet_version}"
                + (f"; {flagged} look like a different person" if flagged else "")
                + (f"; {len(recon.skipped)} skipped" if recon.skipped else "") + ")")
    return f" ({len(recon.faces)} faces in the photo, used {recon.face_index})" if len(recon.faces) > 1 else ""


class FACERIG_OT_extra_photo_add(bpy.types.Operator):
    """Add more photos of the same person (one head is built from all of them)"""

    bl_idname = "facerig.extra_photo_add"
    bl_label = "Add Photos"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    files: CollectionProperty(type=bpy.types.OperatorFileListElement,  # type: ignore[valid-type]
                              options={"HIDDEN", "SKIP_SAVE"})
    filter_glob: StringProperty(default=formats.file_browser_glob(),  # type: ignore[valid-type]
                                options={"HIDDEN", "SKIP_SAVE"})  # Blender's image filter hides HEIC
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def invoke(self, context: Any, event: Any) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> set[str]:
        chosen = [str(Path(self.directory) / f.name) for f in self.files if f.name] if self.directory else []
        chosen = chosen or ([self.filepath] if self.filepath else [])
        if not chosen:
            self.report({"ERROR"}, "no photo chosen")
            return {"CANCELLED"}
        settings = context.scene.facerig
        for path in chosen:
            settings.extra_photos.add().name = path
        settings.extra_photos_index = len(settings.extra_photos) - 1
        return {"FINISHED"}


class FACERIG_OT_extra_photo_remove(bpy.types.Operator):
    """Remove the selected extra photo from the list"""

    bl_idname = "facerig.extra_photo_remove"
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    index: IntProperty(default=-1, min=-1, options={"SKIP_SAVE"},  # type: ignore[valid-type]
                       description="-1 = the list's selected entry")

    def execute(self, context: Any) -> set[str]:
        settings = context.scene.facerig
        index = settings.extra_photos_index if self.index < 0 else self.index
        if not 0 <= index < len(settings.extra_photos):
            return {"CANCELLED"}
        settings.extra_photos.remove(index)
        settings.extra_photos_index = max(0, min(index, len(settings.extra_photos) - 1))
        return {"FINISHED"}


class _FaceModelInstall:
    """Shared by the two face-model buttons: ``execute`` installs at once (scripts, background mode,
    a chosen local file); :meth:`start` (the download button's ``invoke``) runs the install on a thread
    and polls it, so Blender's window stays responsive while ICT-FaceKit is downloaded and converted.
    (No class annotations here: Blender would read them as operator properties.)"""

    def source(self) -> str:
        raise NotImplementedError

    def refusal(self, source: str) -> str | None:
        return None

    def _finish(self, job: dict[str, Any]) -> set[str]:
        if job.get("error"):
            self.report({"ERROR"}, job["error"])
            return {"CANCELLED"}
        self.report({"INFO"}, f"face model installed at {job['path']}")
        return {"FINISHED"}

    @staticmethod
    def _run(source: str, dest: Path, job: dict[str, Any]) -> None:
        try:
            job["path"] = install_face_model(source, dest)
        except (OSError, ValueError, facemodel.FaceModelError) as exc:
            job["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - on the download thread nothing else would see it
            log.exception("installing the face model from %s failed", source)
            job["error"] = f"installing the face model failed: {exc!r}"

    def execute(self, context: Any) -> set[str]:
        source = self.source()
        if (reason := self.refusal(source)) is not None:
            self.report({"ERROR"}, reason)
            return {"CANCELLED"}
        job: dict[str, Any] = {}
        self._run(source, addon_data_dir(), job)
        return self._finish(job)

    def start(self, context: Any) -> set[str]:
        source = self.source()
        if (reason := self.refusal(source)) is not None:
            self.report({"ERROR"}, reason)
            return {"CANCELLED"}
        self._job = {}
        thread = threading.Thread(target=self._run, args=(source, addon_data_dir(), self._job), daemon=True)
        self._job["thread"] = thread
        thread.start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.5, window=context.window)
        wm.modal_handler_add(self)
        self.report({"INFO"}, "installing the face model…")
        return {"RUNNING_MODAL"}

    def modal(self, context: Any, event: Any) -> set[str]:
        if event.type != "TIMER" or self._job["thread"].is_alive():
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(self._job)


class FACERIG_OT_fetch_face_model(_FaceModelInstall, bpy.types.Operator):
    """Download ICT-FaceKit (MIT licence) from GitHub and convert it into the add-on's data folder"""

    bl_idname = "facerig.fetch_face_model"
    bl_label = "Download Face Model"
    bl_options = {"REGISTER"}

    url: StringProperty(name="URL", options={"HIDDEN", "SKIP_SAVE"},  # type: ignore[valid-type]
                        description="archive to download; empty = ICT-FaceKit's GitHub archive")

    def source(self) -> str:
        return self.url or convert_module().ICT_ARCHIVE_URL

    def refusal(self, source: str) -> str | None:
        if needs_online_access(source) and not bpy.app.online_access:
            return ("online access is off: allow it in Preferences › System › Network, or download "
                    f"{ICT_URL} yourself and use Choose Local File")
        return None

    def invoke(self, context: Any, event: Any) -> set[str]:
        return self.start(context)


class FACERIG_OT_choose_face_model(_FaceModelInstall, bpy.types.Operator):
    """Use a local ICT-FaceKit download: its zip, its folder (FaceXModel), or an .npz converted before"""

    bl_idname = "facerig.choose_face_model"
    bl_label = "Choose Local File"
    bl_options = {"REGISTER"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.zip;*.npz", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def source(self) -> str:
        return bpy.path.abspath(self.filepath)

    def refusal(self, source: str) -> str | None:
        return None if self.filepath else "choose ICT-FaceKit's zip, its folder or an .npz"

    def invoke(self, context: Any, event: Any) -> set[str]:
        if self.filepath:
            return self.execute(context)
        context.window_manager.fileselect_add(self)   # then execute: converting a local copy takes ≈ 30 s
        return {"RUNNING_MODAL"}


def face_model_available(context: Any) -> bool:
    try:
        resolve_face_model(context)
    except facemodel.FaceModelError:
        return False
    return True


@bpy.app.handlers.persistent
def _pack_before_save(*_args: Any) -> None:
    """Generated textures are packed only on save (packing costs ~90 ms per image)."""
    from .export import pack_generated_images

    pack_generated_images()


CLASSES = (FACERIG_AddonPreferences, FaceRigPhotoPath, FaceRigSettings, FACERIG_OT_detect_faces,
           FACERIG_OT_reconstruct, FACERIG_OT_extra_photo_add, FACERIG_OT_extra_photo_remove,
           FACERIG_OT_fetch_face_model, FACERIG_OT_choose_face_model)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.facerig = bpy.props.PointerProperty(type=FaceRigSettings)
    if _pack_before_save not in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.append(_pack_before_save)
    os.environ.setdefault("GLOG_minloglevel", "2")  # keep MediaPipe's C++ logging out of Blender's console


def unregister() -> None:
    if _pack_before_save in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(_pack_before_save)
    del bpy.types.Scene.facerig
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
