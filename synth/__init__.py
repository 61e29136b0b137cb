"""Synthetic training corpora: random ICT faces rendered headless in Blender with exact labels.

* :mod:`synth.corpus` — the corpus format (sharded ``np.savez`` + manifest); numpy only, the
  learner's entry point is :func:`synth.corpus.open_corpus`.
* :mod:`synth.render` — render (or resume) a corpus, locally or on Ray (no bpy itself): the workers are
  in :mod:`synth.workers` and :mod:`synth.ray_render`, the settings and the per-shard renderer in
  :mod:`synth.shards`, the per-image seeds and labels in :mod:`synth.labels`.
* :mod:`synth.views` — views of reconstructed photos (its renderer is passed in through the settings).
* :mod:`synth.blender_scene` — all bpy calls; imported only inside worker processes.
* :mod:`synth.augment` — backgrounds, occluders, degradations (numpy/cv2).
* :mod:`synth.exr`, :mod:`synth.preview` — frame read-back and contact sheets.
"""
