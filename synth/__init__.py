"""Synthetic training corpora: random ICT faces rendered headless in Blender with exact labels.

* :mod:`synth.corpus` — the corpus format (sharded ``np.savez`` + manifest); numpy only, the
  learner's entry point is :func:`synth.corpus.open_corpus`.
* :mod:`synth.render` — settings, sampling, labels and the worker processes (no bpy itself).
* :mod:`synth.blender_scene` — all bpy calls; imported only inside worker processes.
* :mod:`synth.augment` — backgrounds, occluders, degradations (numpy/cv2).
* :mod:`synth.exr`, :mod:`synth.preview` — frame read-back and contact sheets.
"""
