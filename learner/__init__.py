"""facerig's learner: a MobileNetV3-small-like regressor from a face crop to ``FaceParams``.

Modules: ``config`` (dataclass config, TOML/JSON), ``network`` (the regressor and its output
parametrisation), ``losses`` (InverseFaceNet parameter loss, MobileFace vertex/projection
losses, unified masked landmarks, priors), ``augment`` (batched torch augmentation),
``data`` (corpora in memory), ``train`` (resumable loop), ``checkpoint``, ``export`` (ONNX),
``evaluate`` (synthetic metrics), ``plots``, ``runtime`` (malloc/thread tuning).
See ``learner/README.md``.
"""
