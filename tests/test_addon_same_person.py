"""Several photos of one person → one head: C-Net wrapper, aggregation and flags, merged texture,
``facerig reconstruct --same-person`` and the headless operator with extra photos.

Real components throughout: the shipped regressor, MediaPipe, the ICT model, real photos. There is
no identity label for the unlabeled UTKFace chips, so "same person" = mirrored/cropped/rescaled copies
of one photo and "different person" = two clearly different people from the demo photos. Tests of the
trained C-Net use ``blender_addon/models/facerig_cnet.onnx`` and are skipped while it does not exist;
the C-Net *plumbing* (weighting, threshold from metadata, contract errors) is exercised with small
contract-shaped ONNX files written to tmp (never into the repository).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.same_person import (DEFAULT_CNET_PATH, FALLBACK_THRESHOLD_MM, NO_CNET, ConfidenceNet,
                                     ConfidenceNetError, SamePersonError, get_cnet, reconstruct_same_person,
                                     resolve_cnet_path)
from runtime.pipeline import FaceIndexError, get_regressor, refine_reconstruction
from facemodel.aggregation import aggregate_identity, identity_rms_mm

from .conftest import FACES

DEMO = FACES / "demo"
GRACE = DEMO / "grace_hopper.jpg"
ASTRONAUT = DEMO / "astronaut_eileen_collins_nasa.png"
LUCIANO = DEMO / "max_Luciano.png"
BRYAN = DEMO / "max_Bryan.png"
UTK = FACES / "unlabeled" / "utkface_200"
UTK_ADULT = UTK / "25_0_0_20170102233320979.jpg.chip.jpg"   # first 20–60-year-old chip in name order
real_cnet = pytest.mark.skipif(not DEFAULT_CNET_PATH.is_file(),
                               reason="blender_addon/models/facerig_cnet.onnx not trained yet")


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _copies(src: Path, out: Path, mirror: bool = True) -> list[Path]:
    """The photo plus mirrored / cropped / down- and up-scaled copies: one person, several files."""
    img = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    out.mkdir(parents=True, exist_ok=True)
    stem = src.name.split(".")[0]
    copies = {"crop": img[int(0.04 * h):int(0.96 * h), int(0.05 * w):int(0.95 * w)],
              "small": cv2.resize(img, (int(w * 0.75), int(h * 0.75)), interpolation=cv2.INTER_AREA),
              "big": cv2.resize(img, (int(w * 1.5), int(h * 1.5)), interpolation=cv2.INTER_CUBIC)}
    if mirror:
        copies = {"mirror": img[:, ::-1], **copies}
    return [src] + [_write(out / f"{stem}_{k}.png", np.ascontiguousarray(v)) for k, v in copies.items()]


def _standin_cnet(path: Path, n_identity: int = 60, input_size: int = 128, threshold: str | None = "2.5",
                  mode: str = "elementwise") -> Path:
    """A contract-shaped ONNX (tmp only): confidence = exp(mean(image) · s + b) per coefficient,
    so different photos get different, coefficient-wise confidences."""
    import onnx
    from onnx import TensorProto, helper

    width = n_identity if mode == "elementwise" else 1
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean_n1"]),
             helper.make_node("Mul", ["mean_n1", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["logit"]),
             helper.make_node("Exp", ["logit"], ["confidence"])]
    inits = [helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
             helper.make_tensor("scale", TensorProto.FLOAT, [1, width], rng.uniform(-6, 6, width).tolist()),
             helper.make_tensor("bias", TensorProto.FLOAT, [1, width], rng.uniform(-1, 1, width).tolist())]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, input_size, input_size])
    confidence = helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["N", width])
    graph = helper.make_graph(nodes, "standin_cnet", [image], [confidence], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tests")
    model.ir_version = 8
    meta = {"facerig.n_identity": str(n_identity), "facerig.input_size": str(input_size), "facerig.cnet_mode": mode,
            "facerig.model_card": "stand-in for plumbing tests"}
    if threshold is not None:
        meta["facerig.same_person_rms_mm"] = threshold
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def grace_copies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _copies(GRACE, tmp_path_factory.mktemp("grace"))


@pytest.fixture(scope="module")
def missing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nocnet") / "missing_cnet.onnx"


@pytest.fixture(scope="module")
def fallback(grace_copies: list[Path], missing: Path, face_model):
    return reconstruct_same_person(grace_copies, cnet=missing, model=face_model)


# -- library: aggregation, flags, skipping ---------------------------------------------------------
def test_aggregate_module_imports_without_bpy_or_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, runtime.same_person; bad = [m for m in ('bpy', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_copies_of_one_photo_are_one_person(fallback, grace_copies: list[Path], face_model) -> None:
    """No C-Net: plain mean, the 2.5 mm threshold, and no copy flagged."""
    same = fallback
    assert same.cnet_version == NO_CNET and same.confidences is None
    assert same.threshold_mm == FALLBACK_THRESHOLD_MM
    assert same.sources == [str(p) for p in grace_copies] and not same.skipped
    np.testing.assert_allclose(same.network_identity, same.identities.mean(0), atol=1e-6)
    assert not same.outliers.any(), same.distances_mm
    assert same.distances_mm.max() < 1.6           # leave-one-out, mirror included (measured below 1.3 mm)
    for photo, raw in zip(same.photos, same.identities):
        np.testing.assert_array_equal(photo.params.identity, same.identity)   # one shape for every view
        np.testing.assert_array_equal(photo.regressed_params.identity, raw)   # network output kept
        np.testing.assert_array_equal(photo.crop_params.identity, same.identity)
        assert photo.refinement["landmark_error_after_px"] < photo.refinement["landmark_error_before_px"]
        assert not photo.refinement["skipped"] and photo.refinement["points"]
    # the shape is the mean of the photos' own refined identities (each as a single photo would get it)
    np.testing.assert_allclose(same.identity, same.refined_identities.mean(0), atol=1e-6)
    alone = refine_reconstruction(same.photos[0], face_model)
    np.testing.assert_allclose(same.refined_identities[0], alone.crop_params.identity, atol=1e-6)
    assert identity_rms_mm(face_model, same.identity, same.network_identity) > 0.05
    yaws = [abs(float(p.regressed_params.rotation[0])) for p in same.photos]   # chosen before refining
    assert same.primary_index == int(np.argmin(yaws))
    assert same.params is same.primary.params
    assert {"model_load", "photos", "cnet", "aggregate", "refine", "total"} <= set(same.timings)
    doc = json.loads(json.dumps(same.summary()))
    assert [p["primary"] for p in doc["photos"]].count(True) == 1


def test_utkface_rescaled_and_cropped_copies_not_flagged(tmp_path: Path, missing: Path, face_model) -> None:
    """A 200×200 UTKFace chip. Mirrored chips are left out: with the regressor of the time a mirrored chip's
    identity differed by 3.0 mm median (30 chips), enough to be flagged at 2.5 mm half the time (round 8:
    0.90 mm, `facerig eval identity-consistency --box detect --limit 30`)."""
    same = reconstruct_same_person(_copies(UTK_ADULT, tmp_path, mirror=False), cnet=missing, model=face_model)
    assert len(same.photos) == 4 and not same.outliers.any(), same.distances_mm   # measured 0.2–0.7 mm (round 8)


def test_different_person_is_farthest_and_flagging_warns(grace_copies: list[Path], missing: Path, face_model,
                                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Luciano among three copies of Grace Hopper's photo is the photo farthest from the others
    (default regressor, bootstrap round 8: copies 0.5–1.25 mm, Luciano 2.2 mm leave-one-out) — below the
    5.0 mm fallback threshold, so unflagged (a limitation, see the issue-8 note; the astronaut, 1.65 mm,
    is the farthest, and unflagged too). With a threshold between the two the flag, the
    warning and the choice of primary photo work as designed."""
    plain = reconstruct_same_person(grace_copies[:3] + [LUCIANO], cnet=missing, model=face_model)
    d = plain.distances_mm
    assert int(np.argmax(d)) == 3 and not plain.outliers.any(), d
    cut = _standin_cnet(tmp_path / "cut.onnx", threshold="1e9")
    d = reconstruct_same_person(grace_copies[:3] + [LUCIANO], cnet=cut, model=face_model).distances_mm
    assert int(np.argmax(d)) == 3, d
    mid = _standin_cnet(tmp_path / "mid.onnx", threshold=f"{(d[3] + d[:3].max()) / 2:.6f}")
    with caplog.at_level(logging.WARNING, logger="runtime.same_person"):
        same = reconstruct_same_person(grace_copies[:3] + [LUCIANO], cnet=mid, model=face_model)
    assert same.outliers.tolist() == [False, False, False, True], same.distances_mm
    assert same.primary.source != str(LUCIANO)                # a flagged photo never sets the pose
    msgs = [r.getMessage() for r in caplog.records]
    assert any(LUCIANO.name in m and "looks like a different person" in m for m in msgs), msgs
    assert any("looks like a different person" in w for w in same.warnings)
    # the shape is the three matching photos' refined identities only; Luciano gets it, with his own pose fitted
    three = aggregate_identity(same.refined_identities[:3], same.confidences[:3])
    np.testing.assert_allclose(same.identity, three, atol=1e-6)
    np.testing.assert_array_equal(same.photos[3].params.identity, same.identity)
    assert same.photos[3].refinement["landmark_error_after_px"] < same.photos[3].refinement["landmark_error_before_px"]


def test_photos_whose_points_are_not_trusted_are_fitted_once(tmp_path: Path, missing: Path, face_model,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A regressor that ignores its input (one face, rolled 29°, for every crop) is far from FaceMesh's points
    on upright photos, so the regressor's limit skips the refinement. The second pass (pose and expression
    for the person's shape) does not try those points again: one warning per photo, the network's pose
    and expression kept, the shape in both the photo and the crop params."""
    from runtime.testing import build_constant_regressor, plausible_params

    const = build_constant_regressor(tmp_path / "constant.onnx", plausible_params(face_model, n_identity=60,
                                                                                     rotation=(0.0, 0.0, 0.5)))
    with caplog.at_level(logging.WARNING, logger="runtime.pipeline"):
        same = reconstruct_same_person([GRACE, LUCIANO], regressor=const, cnet=missing, model=face_model)
    assert sum("refinement skipped" in r.getMessage() for r in caplog.records) == 2, caplog.text
    for photo in same.photos:
        assert "not trusted" in photo.refinement["skipped"]
        for params in (photo.params, photo.crop_params):
            np.testing.assert_array_equal(params.identity, same.identity)
        np.testing.assert_array_equal(photo.crop_params.expression, photo.regressed_params.expression)
        np.testing.assert_array_equal(photo.crop_params.rotation, photo.regressed_params.rotation)
        np.testing.assert_array_equal(photo.crop_params.translation, photo.regressed_params.translation)


def test_grace_and_luciano_separate_less_than_the_threshold(grace_copies: list[Path], missing: Path,
                                                            face_model) -> None:
    """Honest numbers (default regressor, bootstrap round 8): Grace Hopper vs max_Luciano are 2.0–2.6 mm
    apart as identity shapes, more than any two copies of Grace's photo (≤ 0.83 mm), so Luciano is the photo
    farthest from the aggregate — but 2.2 mm from it, below the 5.0 mm fallback threshold: *not*
    flagged without a C-Net (not asserted: a limitation, not a goal). max_Bryan (0.7–1.3 mm) and the
    astronaut (1.4–2.0 mm) are only just beyond the copies' spread with this regressor (issue 4 and 8 notes)."""
    same = reconstruct_same_person(grace_copies + [LUCIANO], cnet=missing, model=face_model)
    ids = same.identities
    within = max(float(identity_rms_mm(face_model, ids[i], ids[j])) for i in range(5) for j in range(i))
    across = float(identity_rms_mm(face_model, ids[0], ids[5]))
    assert across > within
    assert int(np.argmax(same.distances_mm)) == 5


def test_photos_without_a_face_are_skipped(tmp_path: Path, missing: Path, face_model,
                                           caplog: pytest.LogCaptureFixture) -> None:
    grey = _write(tmp_path / "grey.png", np.full((240, 240, 3), 128, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    with caplog.at_level(logging.WARNING, logger="runtime.same_person"):
        same = reconstruct_same_person([grey, GRACE, broken], cnet=missing, model=face_model)
    assert same.sources == [str(GRACE)] and same.primary_index == 0
    assert [s.source for s in same.skipped] == [str(grey), str(broken)]
    assert "no face found" in same.skipped[0].reason and "not a readable image" in same.skipped[1].reason
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "skipping" in logged and "grey.png" in logged and "broken.jpg" in logged
    np.testing.assert_array_equal(same.network_identity, same.identities[0])
    np.testing.assert_array_equal(same.identity, same.refined_identities[0])   # one photo: its own refined shape
    with pytest.raises(SamePersonError, match="no usable photo: grey.png: no face found"):
        reconstruct_same_person([grey, broken], cnet=missing, model=face_model)
    with pytest.raises(ValueError, match="no photos"):
        reconstruct_same_person([], cnet=missing, model=face_model)
    # a missing file is skipped like an unreadable one; a face index the photo lacks stays an error
    gone = reconstruct_same_person([GRACE, tmp_path / "gone.jpg"], cnet=missing, model=face_model)
    assert [s.source for s in gone.skipped] == [str(tmp_path / "gone.jpg")]
    assert "photo not found" in gone.skipped[0].reason
    with pytest.raises(FaceIndexError, match="face 2 does not exist"):
        reconstruct_same_person([GRACE, LUCIANO], face_index=[0, 2], cnet=missing, model=face_model)


def test_cnet_path_resolution_and_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture, face_model) -> None:
    monkeypatch.setenv("FACERIG_CNET", str(tmp_path / "from_env.onnx"))
    with pytest.raises(FileNotFoundError, match=r"from_env.onnx \(from \$FACERIG_CNET\)"):
        resolve_cnet_path()
    with pytest.raises(FileNotFoundError, match="(from argument)"):
        resolve_cnet_path(tmp_path / "explicit.onnx")
    with caplog.at_level(logging.WARNING, logger="runtime.same_person"):
        assert get_cnet() is None
        same = reconstruct_same_person([GRACE, BRYAN], model=face_model)      # $FACERIG_CNET → missing
    assert same.cnet_version == NO_CNET and same.threshold_mm == FALLBACK_THRESHOLD_MM
    assert any("averaged without confidences" in r.getMessage() for r in caplog.records)
    monkeypatch.delenv("FACERIG_CNET")
    if not DEFAULT_CNET_PATH.is_file():
        with pytest.raises(FileNotFoundError, match="add-on's models/ folder"):
            resolve_cnet_path()


def test_cnet_plumbing_weights_and_threshold(grace_copies: list[Path], tmp_path: Path, face_model) -> None:
    """Confidences from the C-Net file weight each coefficient; its metadata sets the threshold."""
    path = _standin_cnet(tmp_path / "standin.onnx", threshold="0.7")
    net = ConfidenceNet(path)
    assert (net.input_size, net.n_identity, net.mode, net.threshold_mm) == (128, 60, "elementwise", 0.7)
    same = reconstruct_same_person(grace_copies, cnet=net, model=face_model)
    conf = same.confidences
    assert conf.shape == (5, 60) and (conf > 0).all()
    assert np.ptp(conf, axis=0).max() > 0                      # photos really weigh differently
    np.testing.assert_array_equal(conf, net.predict(np.stack([p.crop for p in same.photos])))  # the regressor's crops
    assert same.threshold_mm == 0.7 and same.cnet_version == net.model_version
    np.testing.assert_array_equal(same.outliers, same.distances_mm > 0.7)
    keep = ~same.outliers if (~same.outliers).any() else np.ones(5, bool)     # flagged photos are left out
    np.testing.assert_allclose(same.network_identity, aggregate_identity(same.identities[keep], conf[keep]),
                               atol=1e-6)
    glob = ConfidenceNet(_standin_cnet(tmp_path / "global.onnx", mode="global"))
    assert glob.predict(same.photos[0].crop[None]).shape == (1, 1)


def test_cnet_contract_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    regressor = get_regressor(None)
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ConfidenceNetError, match="not a loadable ONNX model"):
        ConfidenceNet(tmp_path / "junk.onnx")
    with pytest.raises(ConfidenceNetError, match="weights 40 identity modes.*predicts 60"):
        ConfidenceNet(_standin_cnet(tmp_path / "n40.onnx", n_identity=40)).check_compatible(regressor)
    with pytest.raises(ConfidenceNetError, match=r"reads 96² crops.*128²"):
        ConfidenceNet(_standin_cnet(tmp_path / "s96.onnx", input_size=96)).check_compatible(regressor)
    with pytest.raises(ConfidenceNetError, match="unknown facerig.cnet_mode"):
        ConfidenceNet(_standin_cnet(tmp_path / "mode.onnx", mode="pairwise"))
    with pytest.raises(ConfidenceNetError, match="is not a number"):
        ConfidenceNet(_standin_cnet(tmp_path / "thr.onnx", threshold="wide"))
    with caplog.at_level(logging.WARNING, logger="runtime.same_person"):
        no_threshold = ConfidenceNet(_standin_cnet(tmp_path / "nothr.onnx", threshold=None))
    assert no_threshold.threshold_mm == FALLBACK_THRESHOLD_MM
    assert "no facerig.same_person_rms_mm" in caplog.text
    with pytest.raises(ConfidenceNetError, match="weights 40"):
        reconstruct_same_person([GRACE], cnet=tmp_path / "n40.onnx")


# -- the trained C-Net (skipped until blender_addon/models/facerig_cnet.onnx exists) ---------------
@real_cnet
def test_real_cnet_contract() -> None:
    net = ConfidenceNet()
    assert net.path == DEFAULT_CNET_PATH.resolve()
    net.check_compatible(get_regressor(None))
    assert net.mode == "elementwise" and net.threshold_mm > 0
    assert {"facerig.n_identity", "facerig.input_size", "facerig.cnet_mode", "facerig.same_person_rms_mm",
            "facerig.model_card"} <= set(net.metadata)


@real_cnet
def test_each_shipped_regressor_gets_its_own_cnet(face_model, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The default C-Net holds the default regressor (research-trained weights): the synthetic-only model
    gets the C-Net trained for it (renders only), a regressor with none gets plain averaging and a
    warning, and a C-Net named by the user is used as given."""
    from runtime.testing import build_constant_regressor, plausible_params

    synthetic = DEFAULT_CNET_PATH.with_name("facerig_regressor_synthetic.onnx")
    clean = reconstruct_same_person([GRACE, BRYAN], regressor=synthetic, model=face_model)
    own = ConfidenceNet(DEFAULT_CNET_PATH.with_name("facerig_cnet_synthetic.onnx"))
    assert clean.cnet_version == own.model_version and not clean.warnings
    card = own.metadata["facerig.model_card"]
    assert "no photographs" in card and "Frozen regressor facerig_regressor_synthetic.onnx" in card
    default = reconstruct_same_person([GRACE, BRYAN], model=face_model)
    assert default.cnet_version == ConfidenceNet().model_version and not default.warnings
    other = build_constant_regressor(tmp_path / "other.onnx", plausible_params(face_model, n_identity=60))
    plain = reconstruct_same_person([GRACE, BRYAN], regressor=other, model=face_model)
    assert plain.cnet_version == NO_CNET and plain.threshold_mm == FALLBACK_THRESHOLD_MM
    assert any("no shipped C-Net was trained for other.onnx" in w for w in plain.warnings)
    with caplog.at_level(logging.WARNING, logger="runtime.same_person"):
        forced = reconstruct_same_person([GRACE, BRYAN], regressor=synthetic, cnet=DEFAULT_CNET_PATH,
                                         model=face_model)
    assert forced.cnet_version == ConfidenceNet().model_version and "was trained for regressor" in caplog.text


@real_cnet
def test_real_cnet_copies_are_one_person(grace_copies: list[Path], face_model) -> None:
    same = reconstruct_same_person(grace_copies, model=face_model)
    assert same.cnet_version != NO_CNET and same.confidences.shape == (5, 60) and (same.confidences > 0).all()
    assert not same.outliers.any(), (same.distances_mm, same.threshold_mm)
    mixed = reconstruct_same_person(grace_copies[:3] + [LUCIANO], model=face_model)
    assert int(np.argmax(mixed.distances_mm)) == 3 and not mixed.outliers[:3].any(), mixed.distances_mm
    np.testing.assert_array_equal(mixed.outliers, mixed.distances_mm > mixed.threshold_mm)


@real_cnet
@pytest.mark.xfail(strict=True, reason="the shipped C-Net flags at 7.0 mm (leave-one-out, synthetic within-person "
                                       "p99); on real photos identity distances are far smaller (Helen, other "
                                       "people: median 2.5 mm) and the astronaut is 1.7 mm from the others, "
                                       "barely farther than the copies (1.5 mm); calibrating the threshold needs several real "
                                       "photos per person (issue 4 notes)")
def test_real_cnet_flags_a_different_person(grace_copies: list[Path], face_model) -> None:
    """The requirement, stated on its own: the astronaut among three copies of Grace Hopper's photo is
    flagged. With the round-8 regressor she is the farthest photo but only 1.70 mm from the others (copies 0.7–1.52 mm)."""
    mixed = reconstruct_same_person(grace_copies[:3] + [ASTRONAUT], model=face_model)
    assert mixed.outliers[3], (mixed.distances_mm, mixed.threshold_mm)


# -- texture merged from several photos --------------------------------------------------------------
def test_merged_texture_covers_at_least_one_photo(fallback, face_model) -> None:
    from runtime.texture import bake_texture, bake_texture_views, blend_projections, project_photo

    a, b = fallback.photos[0], fallback.photos[1]           # the photo and its mirror image
    size = 256
    single = [bake_texture(face_model, p.params, p.image, size) for p in (a, b)]
    merged = bake_texture_views(face_model, [(a.params, a.image), (b.params, b.image)], size)
    for tile in ("M_Face", "M_BackHead"):
        assert merged.coverage[tile] >= max(s.coverage[tile] for s in single) - 1e-9, tile
    assert merged.coverage["M_Face"] > single[0].coverage["M_Face"]   # the mirror sees the other side
    pa, pb = (project_photo(face_model, p.params, p.image, size) for p in (a, b))
    blend = blend_projections(face_model, [pa, pb])
    w = pa.weights["M_Face"] + pb.weights["M_Face"]
    np.testing.assert_allclose(blend.weights["M_Face"], np.minimum(w, 1.0))
    seen = w > 1e-3
    expect = (pa.colours["M_Face"] * pa.weights["M_Face"][:, None]
              + pb.colours["M_Face"] * pb.weights["M_Face"][:, None])[seen] / w[seen][:, None]
    np.testing.assert_allclose(blend.colours["M_Face"][seen], expect, rtol=1e-4, atol=1e-3)
    # one view: exactly the single-photo bake
    one = bake_texture_views(face_model, [(a.params, a.image)], size)
    for name, img in single[0].images.items():
        np.testing.assert_array_equal(one.images[name], img)


def test_iris_colour_from_the_photo_that_sees_the_eyes(fallback, face_model) -> None:
    from runtime.texture import bake_texture, bake_texture_views

    good = fallback.photos[0]
    away = good.params.numpy()
    blind = type(away)(away.identity, away.expression, away.rotation + np.array([np.pi, 0, 0], np.float32),
                       away.translation, away.sh, away.albedo, away.camera)   # turned away: eyes unseen
    size = 128
    merged = bake_texture_views(face_model, [(blind, good.image), (good.params, good.image)], size)
    np.testing.assert_array_equal(merged.iris_color, bake_texture(face_model, good.params, good.image, size).iris_color)


# -- Blender: build_face, CLI, operator --------------------------------------------------------------
def test_build_face_from_several_photos(fallback, face_model) -> None:
    bpy = pytest.importorskip("bpy")
    from blender_addon.build_mesh import BuildOptions, build_face
    from facemodel import FaceParams

    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = build_face(face_model, fallback, BuildOptions(texture_size=256, name="Grace"), bpy.context)
    obj = result.mesh_object
    assert [o for o in bpy.data.objects if o.type == "MESH" and not o.get("facerig_part")] == [obj]  # one head
    assert len(obj.data.shape_keys.key_blocks) == 1 + 51           # Basis + ARKit's 52 without tongueOut
    stored = FaceParams.from_json(obj["facerig_params"])
    np.testing.assert_allclose(stored.identity, fallback.identity, atol=1e-6)
    np.testing.assert_allclose(stored.rotation, fallback.primary.params.rotation, atol=1e-6)
    assert obj["facerig_photo_count"] == 5 and obj["facerig_cnet_version"] == NO_CNET
    assert json.loads(obj["facerig_photos"]) == fallback.sources and json.loads(obj["facerig_outliers"]) == []
    info = json.loads(obj["facerig_same_person"])
    assert info["threshold_mm"] == FALLBACK_THRESHOLD_MM and len(info["photos"]) == 5
    assert all("mean_confidence" in p and "different_person" in p for p in info["photos"])
    assert result.armature_object["facerig_photo_count"] == 5
    assert obj["facerig_source"] == fallback.primary.source
    assert result.camera_object.data.background_images[0].image.size[:] == (fallback.primary.width,
                                                                           fallback.primary.height)


@pytest.mark.slow
def test_cli_same_person_writes_one_head(grace_copies: list[Path], missing: Path, tmp_path: Path, face_model,
                                         capsys: pytest.CaptureFixture) -> None:
    bpy = pytest.importorskip("bpy")
    from runtime.arkit import key_set
    from facerig_cli.main import main

    photos = [str(p) for p in grace_copies[:3]]
    out = tmp_path / "head.glb"
    assert main(["reconstruct", *photos, "-o", str(out), "--same-person", "--cnet", str(missing),
                 "--texture-size", "256"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.glb"]
    text = capsys.readouterr().out
    assert "3 photo(s) of one person" in text and text.count(" mm from the aggregate") == 3
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(out))
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys]   # skin, teeth, lashes
    assert len(meshes) == 3
    skin = max(meshes, key=lambda o: len(o.data.vertices))
    names = [k.name for k in skin.data.shape_keys.key_blocks[1:]]
    assert names == key_set(face_model.expression_names, "arkit").names and len(names) == 51
    assert main(["reconstruct", *photos, "-o", str(tmp_path / "out"), "--format", "json", "--same-person",
                 "--cnet", str(missing)]) == 0
    doc = json.loads((tmp_path / "out" / f"{grace_copies[0].stem}.json").read_text())
    assert len(doc["photos"]) == 3 and doc["same_person"]["cnet_version"] == NO_CNET
    np.testing.assert_allclose(doc["params"]["identity"], doc["same_person"]["identity"], atol=1e-6)


@pytest.mark.slow
def test_operator_with_extra_photos_builds_one_object(grace_copies: list[Path], missing: Path, tmp_path: Path) -> None:
    bpy = pytest.importorskip("bpy")
    import blender_addon

    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    try:
        grey = _write(tmp_path / "grey.png", np.full((240, 240, 3), 128, np.uint8))
        res = bpy.ops.facerig.reconstruct(filepath=str(grace_copies[0]), texture_size=256, cnet_path=str(missing),
                                          extra_filepaths=[{"name": str(grace_copies[1])},
                                                           {"name": str(grey)}])
        assert res == {"FINISHED"}
        meshes = [o for o in bpy.data.objects if o.type == "MESH" and not o.get("facerig_part")]
        assert len(meshes) == 1
        obj = bpy.context.view_layer.objects.active
        assert obj == meshes[0] and len(obj.data.shape_keys.key_blocks) == 52
        assert obj["facerig_photo_count"] == 2
        assert json.loads(obj["facerig_refinement"])["points"] == "dense"   # the primary photo's fit (frontal)
        assert json.loads(obj["facerig_same_person"])["skipped"][0]["source"].endswith("grey.png")
        # the panel's list: add (multi-select file browser result) and remove
        settings = bpy.context.scene.facerig
        bpy.ops.facerig.extra_photo_add(directory=str(grace_copies[2].parent),
                                        files=[{"name": grace_copies[2].name}, {"name": grace_copies[3].name}])
        assert [Path(e.name).name for e in settings.extra_photos] == [grace_copies[2].name, grace_copies[3].name]
        bpy.ops.facerig.extra_photo_remove(index=0)
        assert [Path(e.name).name for e in settings.extra_photos] == [grace_copies[3].name]
        _draw_panel(bpy)
    finally:
        blender_addon.unregister()


def _draw_panel(bpy) -> None:
    """The panel draws the extra-photo list (background mode has no UI: record the calls)."""
    from types import SimpleNamespace

    from blender_addon import ui

    calls: list[tuple[str, tuple]] = []

    class Layout:
        def __getattr__(self, name: str):
            def call(*args, **kwargs):
                calls.append((name, args))
                return self
            return call

    ui.VIEW3D_PT_facerig.draw(SimpleNamespace(layout=Layout()), bpy.context)
    assert ("template_list", ("FACERIG_UL_extra_photos", "", bpy.context.scene.facerig, "extra_photos",
                              bpy.context.scene.facerig, "extra_photos_index")) in calls
    assert ("operator", ("facerig.extra_photo_add",)) in calls
