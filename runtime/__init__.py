"""facerig's photo runtime: one photo (or several of one person) → face parameters and textures, without bpy.

numpy, OpenCV, onnxruntime and MediaPipe; never bpy, never torch. Read as data flow:
:mod:`photo` (decode, orientation, colour profile, limits) → :mod:`detect` (face boxes and landmarks) →
:mod:`regressor` (the ONNX network on the canonical crop) → :mod:`pipeline` (crop, regress, refine on the
detected landmarks) → :mod:`same_person` (several photos → one identity) and :mod:`texture` (the photo
projected into the model's UV layout). The Blender add-on (``blender_addon/``, the bpy edge), the ``facerig``
command, ``evaluation/`` and the learner's photo corpora all call this package; the extension zip vendors it
(:mod:`runtime.fm`). Submodules are imported on use, so importing the package costs nothing.
"""
