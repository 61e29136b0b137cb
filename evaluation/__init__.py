"""facerig's evaluation harness: landmark accuracy on labelled photos, synthetic accuracy, speed.

numpy, OpenCV, onnxruntime and (for the peer baseline) MediaPipe — never torch, so the
harness measures exactly what the Blender add-on runs. Metric definitions live in
:mod:`facemodel.metrics` and are shared with the learner's validation.
"""
