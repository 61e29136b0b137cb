"""facerig's learner: a MobileNetV3-small-like regressor from a face crop to ``FaceParams``.

Modules: ``config`` (dataclass config, TOML/JSON), ``network`` (the regressor and its output
parametrisation), ``losses`` (InverseFaceNet parameter loss, MobileFace vertex/projection
losses, unified masked landmarks, priors), ``augment`` (batched torch augmentation),
``data`` (corpora in memory), ``photo_corpus`` (photos with detected landmarks, via ``runtime``),
``train`` (resumable loop), ``checkpoint``, ``export`` (ONNX), ``onnx_import``, ``evaluate`` (synthetic
metrics), ``cnet`` (the confidence network for several photos of one person), ``plots``, ``cpu_tuning``
(malloc/thread tuning). torch-side only: it imports ``facemodel``, ``synth`` (corpora) and ``runtime``
(photo corpora, the ONNX runner), never ``evaluation`` or the add-on; the bootstrap loop over all of
them is the ``bootstrap`` package. See ``learner/README.md``.
"""
