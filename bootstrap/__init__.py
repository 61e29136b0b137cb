"""Bootstrapping on real photos: the loop over the whole project, so it sits above all of it.

Each round reconstructs photos with the runtime (``runtime/``), renders new views of them (``synth/``),
trains on them (``learner/``) and measures the result (``evaluation/``); :mod:`bootstrap.loop` holds the
loop, ``facerig bootstrap`` runs it. Nothing below imports this package.
"""
