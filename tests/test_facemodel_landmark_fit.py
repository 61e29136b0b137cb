"""facemodel.landmark_fit: the MAP refinement of a prediction on detected 2-D landmarks."""

from dataclasses import fields, replace

import numpy as np
import pytest

from facemodel import FaceParams, blas_threads, landmark_fit, landmark_solver
from facemodel.camera import project
from facemodel.formation import landmarks_2d, mesh_model_space
from facemodel.geometry import euler_to_matrix, procrustes_align
from facemodel.landmark_fit import (MAX_DISAGREEMENT, REFINE_GATE_KEY, LandmarkFitSettings, LandmarkRefiner,
                                   fit_landmarks, fit_problem, refine_gate)
from facemodel.landmark_maps import MEDIAPIPE_SPREAD_MM, MEDIAPIPE_TO_68, MEDIAPIPE_TO_ICT
from facemodel.landmark_solver import FitBasis, rotation_derivatives, symmetric

from .landmark_fit_reference import ReferenceProblem, reference_fit

SIZE = 128


def face(seed: int = 0, yaw_deg: float = 25.0) -> FaceParams:
    """A random face (60 identity modes used) at ``yaw_deg``, 95 cm from the camera."""
    rng = np.random.default_rng(seed)
    ident = np.zeros(60, np.float32)
    ident[:] = rng.normal(0, 1, 60)
    expr = np.clip(rng.normal(0.1, 0.2, 53), 0, 1).astype(np.float32)
    return replace(FaceParams.neutral(n_identity=60), identity=ident, expression=expr,
                   rotation=np.radians([yaw_deg, 5.0, -3.0]).astype(np.float32),
                   translation=np.array([1.0, -0.5, -95.0], np.float32))


def perturbed(p: FaceParams, seed: int = 1) -> FaceParams:
    rng = np.random.default_rng(seed)
    return replace(p, identity=(p.identity + rng.normal(0, 0.5, p.identity.shape)).astype(np.float32),
                   expression=np.clip(p.expression + rng.normal(0, 0.1, 53), 0, 1).astype(np.float32),
                   rotation=(p.rotation + np.radians([4.0, -3.0, 2.0])).astype(np.float32),
                   translation=(p.translation + np.array([0.8, -0.5, 4.0])).astype(np.float32))


@pytest.fixture(scope="module")
def inner51(face_model):
    return face_model.arrays.subset(face_model.landmark_indices("fixed")[17:])


@pytest.fixture(scope="module")
def dense(face_model):
    return face_model.arrays.subset(face_model.vertex_range("face")[::40])


def as_float64(p: FaceParams) -> FaceParams:
    """``p`` in float64, so fitted parameters can be compared beyond float32 rounding."""
    return FaceParams(*(np.asarray(getattr(p, f.name), np.float64) for f in fields(p)))


def problem(arrays, p: FaceParams, pixels: np.ndarray, weights: np.ndarray, settings: LandmarkFitSettings,
            identity_mean: np.ndarray | None = None):
    """The fast solver's problem and the straightforward reference's for the same fit, and the start θ."""
    fast, blocks = fit_problem(FitBasis.from_arrays(arrays), p, pixels, SIZE, SIZE, settings, weights, identity_mean)
    ref = ReferenceProblem(arrays, p, pixels, SIZE, SIZE, weights, settings, identity_mean)
    return fast, ref, fast.pack(blocks, p.rotation, p.translation)


def test_rotation_and_its_derivatives_written_out():
    """The written-out R and ∂R/∂angle equal ``geometry.euler_to_matrix`` and its finite differences."""
    for angles in (np.radians([25.0, 5.0, -3.0]), np.radians([-80.0, 40.0, 170.0]), np.zeros(3)):
        rot = rotation_derivatives(angles)
        np.testing.assert_allclose(rot[0], euler_to_matrix(angles), atol=1e-15)
        np.testing.assert_array_equal(rotation_derivatives(angles, False)[0], rot[0])
        for a in range(3):
            e = np.eye(3)[a] * 1e-6
            fd = (euler_to_matrix(angles + e) - euler_to_matrix(angles - e)) / 2e-6
            np.testing.assert_allclose(rot[1 + a], fd, atol=1e-9)


def test_jacobian_and_normal_equations_match_finite_differences(inner51):
    """The solver's analytic Jacobian (per-point basis, pose columns) against central differences of its
    residual, and its normal equations against the reference's JᵀJ + prior, Jᵀr + prior·(θ − mean)."""
    p = face()
    target = np.asarray(landmarks_2d(inner51, p, SIZE, SIZE), np.float64) + 3.0
    weights = np.linspace(0.5, 1.5, 51)
    for settings, mean in ((LandmarkFitSettings(sigma_px=1.7, expression_prior=4.0), p.identity + 0.3),
                           (LandmarkFitSettings(sigma_px=2.0, fit_identity=False), None)):
        fast, ref, theta0 = problem(inner51, p, target, weights, settings, mean)
        theta = fast.clip(theta0 + np.random.default_rng(0).normal(0, 0.05, theta0.shape))
        state = fast.state(theta)
        jac = fast.jacobian(state).copy()
        eps = 1e-6
        fd = np.stack([(fast.residual(theta + eps * e) - fast.residual(theta - eps * e)) / (2 * eps)
                       for e in np.eye(len(theta))], 1)
        np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())
        # the same residual, cost, Jacobian and normal equations as the reference
        np.testing.assert_allclose(state.residual, ref.residual(theta), rtol=1e-12, atol=1e-12)
        assert state.cost == pytest.approx(ref.cost(theta), rel=1e-12)
        np.testing.assert_allclose(jac, ref.jacobian(theta), rtol=1e-11, atol=1e-11 * np.abs(jac).max())
        normal, grad = fast.normal_equations(state)
        ref_jac = ref.jacobian(theta)
        np.testing.assert_allclose(symmetric(normal), ref_jac.T @ ref_jac + np.diag(ref.prior), rtol=1e-11,
                                   atol=1e-11 * np.abs(normal).max())
        np.testing.assert_allclose(grad, ref_jac.T @ ref.residual(theta) + ref.prior * (theta - ref.prior_mean),
                                   rtol=1e-10, atol=1e-10 * np.abs(grad).max())


def test_fast_fit_equals_the_straightforward_one(face_model, inner51, dense):
    """The solver against the reference implementation of the same cost and damping (tests/
    landmark_fit_reference.py) on several faces, point sets and settings: the same accepted steps and
    parameters equal to float64 rounding (≤ 1e-9 relative), also from a prepared FitBasis."""
    refiner = LandmarkRefiner.from_model(face_model)
    rng = np.random.default_rng(7)
    cases = []
    for seed in range(3):
        truth = face(seed=40 + seed, yaw_deg=(-35.0, 5.0, 50.0)[seed])
        start = as_float64(perturbed(truth, seed=50 + seed))
        for arrays, sigma in ((dense, 0.3), (refiner.dense_arrays, 3.0), (inner51, 2.0)):
            n = arrays.neutral.shape[0]
            pixels = np.asarray(landmarks_2d(arrays, truth, SIZE, SIZE), np.float64) + rng.normal(0, 1.5, (n, 2))
            pixels[seed] = np.nan                                    # an ignored point
            settings = LandmarkFitSettings(steps=12, sigma_px=sigma, expression_prior=(0.0, 25.0)[seed % 2],
                                           fit_identity=seed != 2)
            cases.append((arrays, start, pixels, settings, rng.uniform(0.2, 1.0, n) if seed == 1 else None))
    field = np.random.default_rng(8).normal(0, 0.1, (7, 3)).astype(np.float32)
    for fit_identity in (True, False):   # the field fitted (start widened 7 → 20), or kept as it starts
        truth = replace(face(seed=45, yaw_deg=10.0), corrective=field)
        start = as_float64(replace(perturbed(truth, seed=46), corrective=field * 0.5))
        pixels = np.asarray(landmarks_2d(refiner.dense_arrays, truth, SIZE, SIZE), np.float64) \
            + rng.normal(0, 1.0, (len(refiner.dense_arrays.neutral), 2))
        cases.append((refiner.dense_arrays, start, pixels, replace(landmark_fit.DENSE_REFINE_SETTINGS, n_corrective=20,
                      corrective_prior=300.0, fit_identity=fit_identity, gram="float64"), None))
    for arrays, start, pixels, settings, weights in cases:
        kw = dict(weights=weights, identity_prior_mean=start.identity + 0.1)
        ref = reference_fit(arrays, start, pixels, SIZE, SIZE, settings, **kw)
        for given in (arrays, FitBasis.from_arrays(arrays)):
            fit = fit_landmarks(given, start, pixels, SIZE, SIZE, settings, **kw)
            assert fit.steps_accepted == ref.steps_accepted > 0
            theta, want = (np.concatenate([f.params.identity, f.params.expression, f.params.corrective.reshape(-1),
                                           f.params.rotation, f.params.translation]) for f in (fit, ref))
            assert np.abs(theta - want).max() <= 1e-9 * np.abs(want).max()
            assert fit.rms_before_px == pytest.approx(ref.rms_before_px, rel=1e-12)
            assert fit.rms_after_px == pytest.approx(ref.rms_after_px, rel=1e-9)
            np.testing.assert_array_equal(fit.params.sh, start.sh)


def test_solver_takes_extra_linear_blocks(inner51):
    """A further block of linear unknowns (how corrective shapes join the fit): its basis at the fitted
    vertices in FitBasis, one Block more; the Jacobian stays exact and the fit recovers its coefficients."""
    rng = np.random.default_rng(11)
    base = FitBasis.from_arrays(inner51)
    extra = rng.normal(0, 0.3, (4, 51, 3))                           # cm per unit coefficient
    basis = FitBasis(base.neutral, {**base.bases, "extra": extra})
    truth = face(seed=70)
    true_extra = np.array([0.8, -0.5, 0.3, 1.2])
    model = (base.neutral + base.offset("identity", truth.identity) + base.offset("expression", truth.expression)
             + np.tensordot(true_extra, extra, 1))
    camera = np.asarray(truth.camera, np.float64)
    cam = model @ euler_to_matrix(np.asarray(truth.rotation, np.float64)).T + np.asarray(truth.translation, np.float64)
    pixels = project(cam, camera, SIZE, SIZE)
    start = perturbed(truth)
    blocks = [landmark_solver.Block("identity", np.asarray(truth.identity, np.float64), 1e6, truth.identity),
              landmark_solver.Block("expression", np.asarray(truth.expression, np.float64), 1e6, truth.expression, 0, 1),
              landmark_solver.Block("extra", np.zeros(4), np.array([1e-6, 1e-6, 2e-6, 1e-6]))]   # one each
    prob = landmark_solver.Problem(basis, blocks, basis.neutral, camera, SIZE, SIZE, pixels, np.ones(51), 0.1)
    theta = prob.pack(blocks, start.rotation, start.translation)
    jac = prob.jacobian(prob.state(theta)).copy()
    fd = np.stack([(prob.residual(theta + 1e-6 * e) - prob.residual(theta - 1e-6 * e)) / 2e-6
                   for e in np.eye(len(theta))], 1)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())
    end, accepted = landmark_solver.minimise(prob, prob.state(theta), 30, 1e-3)
    fitted = prob.unpack(end.theta)
    assert accepted > 0 and set(fitted) == {"identity", "expression", "extra", "rotation", "translation"}
    np.testing.assert_allclose(fitted["extra"], true_extra, atol=0.02)
    np.testing.assert_allclose(fitted["rotation"], truth.rotation, atol=1e-3)
    with pytest.raises(ValueError, match="each block once"):
        landmark_solver.Problem(basis, blocks + blocks[-1:], basis.neutral, camera, SIZE, SIZE, pixels, np.ones(51), 0.1)


def test_fast_fit_without_scipy_lapack(inner51, monkeypatch):
    """Blender's Python may lack scipy: numpy's syrk and LU solve then give the same fit."""
    truth = face(seed=60, yaw_deg=-10.0)
    start = as_float64(perturbed(truth, seed=61))
    pixels = np.asarray(landmarks_2d(inner51, truth, SIZE, SIZE), np.float64) + 0.7
    settings = LandmarkFitSettings(sigma_px=1.5, expression_prior=25.0)
    with_scipy = fit_landmarks(inner51, start, pixels, SIZE, SIZE, settings)
    monkeypatch.setattr(landmark_solver, "scipy_kernels", lambda: (None, None, None))
    plain = fit_landmarks(inner51, start, pixels, SIZE, SIZE, settings)
    want = reference_fit(inner51, start, pixels, SIZE, SIZE, settings)
    for fit in (with_scipy, plain):
        assert fit.steps_accepted == want.steps_accepted
        np.testing.assert_allclose(fit.params.identity, want.params.identity, rtol=0, atol=1e-9)
        np.testing.assert_allclose(fit.params.rotation, want.params.rotation, rtol=0, atol=1e-11)


def test_exact_points_bring_a_perturbed_start_back(dense):
    """With exact dense points and a sharp σ the fit lands on the true face's projection."""
    truth = face(seed=3)
    pixels = np.asarray(landmarks_2d(dense, truth, SIZE, SIZE), np.float64)
    start = perturbed(truth)
    fit = fit_landmarks(dense, start, pixels, SIZE, SIZE, LandmarkFitSettings(steps=30, sigma_px=0.01))
    assert fit.rms_before_px > 3.0
    assert fit.rms_after_px < 0.05
    assert fit.steps_accepted > 0
    np.testing.assert_allclose(fit.params.rotation, truth.rotation, atol=np.radians(0.3))
    np.testing.assert_allclose(fit.params.translation, truth.translation, atol=1.0)
    # lighting, albedo and camera are not the fit's business
    for name in ("sh", "albedo", "camera"):
        np.testing.assert_array_equal(getattr(fit.params, name), getattr(start, name))


def test_fit_lowers_the_map_cost_and_keeps_expressions_in_range(inner51):
    truth = face(seed=5, yaw_deg=-40.0)
    rng = np.random.default_rng(0)
    pixels = np.asarray(landmarks_2d(inner51, truth, SIZE, SIZE), np.float64) + rng.normal(0, 1.5, (51, 2))
    start = perturbed(truth, seed=7)
    settings = LandmarkFitSettings(steps=10, sigma_px=1.5)
    fit = fit_landmarks(inner51, start, pixels, SIZE, SIZE, settings)
    prob = ReferenceProblem(inner51, start, pixels, SIZE, SIZE, np.ones(51), settings, None)
    assert prob.cost(prob.pack(fit.params)) < prob.cost(prob.clip(prob.pack(start)))
    assert fit.rms_after_px < fit.rms_before_px
    assert fit.params.expression.min() >= 0.0 and fit.params.expression.max() <= 1.0
    assert fit.params.expression.dtype == np.float32


def test_priors_hold_what_the_points_do_not_say(inner51):
    """A strong expression prior keeps the start's expressions; no identity fit keeps identity."""
    truth = face(seed=2)
    pixels = np.asarray(landmarks_2d(inner51, truth, SIZE, SIZE), np.float64)
    start = perturbed(truth)
    held = fit_landmarks(inner51, start, pixels, SIZE, SIZE,
                         LandmarkFitSettings(expression_prior=1e8, fit_identity=False)).params
    np.testing.assert_allclose(held.expression, start.expression, atol=1e-3)
    np.testing.assert_array_equal(held.identity, start.identity)
    assert not np.allclose(held.rotation, start.rotation)     # pose still moves to the points
    # the identity prior's mean is where an unconstrained identity stays
    anchored = fit_landmarks(inner51, start, pixels, SIZE, SIZE, LandmarkFitSettings(sigma_px=1e6),
                             identity_prior_mean=start.identity).params
    np.testing.assert_allclose(anchored.identity, start.identity, atol=1e-3)


def test_zero_steps_and_ignored_points(inner51):
    p = face()
    pixels = np.asarray(landmarks_2d(inner51, p, SIZE, SIZE), np.float64)
    same = fit_landmarks(inner51, p, pixels, SIZE, SIZE, LandmarkFitSettings(steps=0))
    np.testing.assert_array_equal(same.params.to_vector(), p.to_vector())
    assert same.rms_before_px == pytest.approx(0.0, abs=1e-3)
    # a missing (NaN) point or a zero-weight outlier does not pull the face
    bad = pixels.copy()
    bad[3] = np.nan
    bad[10] += 500.0
    w = np.ones(51)
    w[10] = 0.0
    fit = fit_landmarks(inner51, perturbed(p), bad, SIZE, SIZE, LandmarkFitSettings(steps=20, sigma_px=0.05),
                        weights=w)
    assert fit.rms_after_px < 0.2


def test_bad_input_is_rejected(inner51):
    p = face()
    pixels = np.zeros((51, 2))
    with pytest.raises(ValueError, match=r"\(51, 2\)"):
        fit_landmarks(inner51, p, np.zeros((68, 2)), SIZE, SIZE)
    with pytest.raises(ValueError, match="one face"):
        fit_landmarks(inner51, FaceParams.stack([p, p]), pixels, SIZE, SIZE)
    with pytest.raises(ValueError, match="at least 6"):
        fit_landmarks(inner51, p, np.full((51, 2), np.nan), SIZE, SIZE)
    with pytest.raises(ValueError, match="weights"):
        fit_landmarks(inner51, p, pixels, SIZE, SIZE, weights=-np.ones(51))
    with pytest.raises(ValueError, match="sigma_px"):
        LandmarkFitSettings(sigma_px=0.0)
    with pytest.raises(ValueError, match="steps"):
        LandmarkFitSettings(steps=-1)


def test_refiner_uses_inner_points_and_distrusts_a_detector_far_off(face_model):
    """The jaw is ignored; points ≫ 8 % of the face size away from the start leave the params alone."""
    refiner = LandmarkRefiner.from_model(face_model)
    truth = face(seed=4)
    points = np.asarray(landmarks_2d(face_model.arrays.subset(face_model.landmark_indices("fixed")), truth,
                                     SIZE, SIZE), np.float64)
    points[:17] += 40.0                      # a jaw on the visible outline far from the model's: not used
    start = replace(truth, rotation=(truth.rotation + np.radians([2.0, -1.5, 1.0])).astype(np.float32),
                    translation=(truth.translation + np.array([0.3, 0.2, 1.0])).astype(np.float32))
    fit = refiner.refine(start, points, SIZE)
    assert not fit.skipped and fit.rms_after_px < 0.5 * fit.rms_before_px
    far = points.copy()
    far[17:] = far[17:] * 1.4 - 20           # a different, larger face
    skipped = refiner.refine(start, far, SIZE)
    assert "not trusted" in skipped.skipped and skipped.steps_accepted == 0
    np.testing.assert_array_equal(skipped.params.to_vector(), start.to_vector())
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        refiner.refine(start, points[17:], SIZE)
    # the regressor's own limit replaces the refiner's: a model known to sit farther from the detector
    dist, fraction = refiner.disagreement(start, far, SIZE)
    assert fraction > MAX_DISAGREEMENT and f"{fraction:.1%}" in skipped.skipped and dist == skipped.rms_before_px
    wide = refiner.refine(start, far, SIZE, max_disagreement=1.5 * fraction)
    assert not wide.skipped and wide.rms_after_px < 0.5 * wide.rms_before_px
    assert refiner.refine(start, far, SIZE, max_disagreement=0.9 * fraction).skipped


def test_refine_gate_from_model_metadata():
    """A regressor's ONNX metadata may declare its limit; a malformed one is an error, not a silent 8 %."""
    assert refine_gate({}) == MAX_DISAGREEMENT == 0.08
    assert refine_gate({REFINE_GATE_KEY: "0.327", "other": "x"}) == 0.327
    for bad in ("abc", "nan", "0", "-0.1", "11", ""):
        with pytest.raises(ValueError, match=REFINE_GATE_KEY):
            refine_gate({REFINE_GATE_KEY: bad})


def test_fit_runs_on_one_blas_thread_and_restores_the_count(inner51, monkeypatch):
    """The solves run single-threaded (threads cost more than a 120² solve) — numpy's OpenBLAS and the
    copy scipy bundles, whose LAPACK the solver calls — and the caller's thread counts are back
    afterwards; the result does not depend on the thread count."""
    blas = blas_threads.numpy_openblas()
    if blas is None:
        pytest.skip("numpy here does not bundle OpenBLAS")
    other = blas_threads.scipy_openblas()
    before = blas.get()
    other_before = other.get() if other is not None else None
    seen: list[int] = []
    seen_other: list[int] = []
    real_minimise = landmark_fit._minimise

    def spy(*args, **kwargs):
        seen.append(blas.get())
        if other is not None:
            seen_other.append(other.get())
        return real_minimise(*args, **kwargs)

    monkeypatch.setattr(landmark_fit, "_minimise", spy)
    p = face(seed=5)
    target = np.asarray(landmarks_2d(inner51, p, SIZE, SIZE), np.float64) + 1.5
    single = fit_landmarks(inner51, perturbed(p), target, SIZE, SIZE, LandmarkFitSettings(sigma_px=2.0))
    assert seen == [1] and blas.get() == before
    if other is not None:
        assert seen_other == [1] and other.get() == other_before
    monkeypatch.setattr(blas_threads, "numpy_openblas", lambda: None)   # a BLAS we cannot steer: no-op
    plain = fit_landmarks(inner51, perturbed(p), target, SIZE, SIZE, LandmarkFitSettings(sigma_px=2.0))
    assert seen == [1, before]
    np.testing.assert_allclose(single.params.identity, plain.params.identity, atol=1e-6)
    np.testing.assert_allclose(single.params.rotation, plain.params.rotation, atol=1e-7)
    assert single.rms_after_px < single.rms_before_px


def test_facemesh_table_agrees_with_icts_own_landmarks(face_model):
    """Two tables derived independently place the inner 51 points together: FaceMesh → ICT vertex
    (votes on photos, ``MEDIAPIPE_TO_ICT``) through ``MEDIAPIPE_TO_68``, and ICT's own Multi-PIE vertices."""
    table = np.asarray(MEDIAPIPE_TO_ICT)
    assert table.shape == (468,) == np.shape(MEDIAPIPE_SPREAD_MM)
    assert table.min() >= 0 and table.max() < len(face_model.vertex_range("face"))
    used = landmark_fit.dense_point_indices()
    assert 350 < len(used) < 468 and len(set(table[used])) > 0.97 * len(used)
    mean = np.asarray(face_model.neutral, np.float64)
    apart_mm = 10 * np.linalg.norm(mean[table[list(MEDIAPIPE_TO_68[17:])]]
                                   - mean[face_model.landmark_indices("fixed")[17:]], axis=1)
    assert np.median(apart_mm) < 2.0 and np.percentile(apart_mm, 90) < 5.0
    # the face oval slides along the silhouette: its sides are not fitted
    jaw_sides = [MEDIAPIPE_TO_68[i] for i in (0, 1, 2, 3, 13, 14, 15, 16)]
    assert not set(jaw_sides) & set(used.tolist())


def facemesh_points(face_model, p: FaceParams) -> np.ndarray:
    """(468, 2) exact 'FaceMesh' points of ``p``: its ``MEDIAPIPE_TO_ICT`` vertices projected."""
    return np.asarray(landmarks_2d(face_model.arrays.subset(np.asarray(MEDIAPIPE_TO_ICT)), p, SIZE, SIZE), np.float64)


def test_dense_refinement_recovers_more_shape_than_the_inner_51(face_model):
    """Given exact points, the ~400 FaceMesh points pin the face's shape down better than the 51 inner
    ones (the identity bound, docs/results.md); both fits use the shipped settings."""
    refiner = LandmarkRefiner.from_model(face_model)
    region = face_model.vertex_range("face")
    errs = {"start": [], "inner": [], "dense": []}
    for seed in range(4):
        truth = face(seed=10 + seed, yaw_deg=5.0 * seed)   # the start adds 4°: all within DENSE_FULL_YAW_DEG
        start = perturbed(truth, seed=20 + seed)
        points = facemesh_points(face_model, truth)
        ibug = np.asarray(landmarks_2d(face_model.arrays.subset(face_model.landmark_indices("fixed")), truth,
                                       SIZE, SIZE), np.float64)
        dense = refiner.refine(start, points, SIZE, max_disagreement=1.0)
        inner = refiner.refine(start, ibug, SIZE, max_disagreement=1.0)
        assert not dense.skipped and dense.rms_after_px < 0.2 * dense.rms_before_px
        assert (dense.points, inner.points) == ("dense", "inner 51")
        true_shape = np.asarray(mesh_model_space(face_model.arrays, truth))[region]
        for key, p in (("start", start), ("inner", inner.params), ("dense", dense.params)):
            shape = np.asarray(mesh_model_space(face_model.arrays, p))[region]
            aligned = procrustes_align(shape, true_shape)
            errs[key].append(10 * np.linalg.norm(aligned - true_shape, axis=1).mean())
    mean = {k: float(np.mean(v)) for k, v in errs.items()}
    assert mean["dense"] < 0.8 * mean["inner"] < 0.8 * mean["start"], mean
    # the trust limit is measured on the same inner 51 either way
    np.testing.assert_allclose(refiner.disagreement(start, points, SIZE)[1],
                               refiner.disagreement(start, points[list(MEDIAPIPE_TO_68)], SIZE)[1])
    with pytest.raises(ValueError, match="468, 2"):
        refiner.refine(start, points[:400], SIZE)
    # a turned face: FaceMesh guesses the far cheek, so the inner 51 of its points are fitted
    turned = face(seed=30, yaw_deg=45.0)
    fit = refiner.refine(perturbed(turned), facemesh_points(face_model, turned), SIZE, max_disagreement=1.0)
    assert fit.points == "inner 51" and refiner.dense_weight(turned, facemesh_points(face_model, turned)) == 0.0
    assert refiner.dense_weight(truth, ibug) == 0.0            # 68 points: nothing dense to fit


def test_dense_share_falls_smoothly_with_yaw(face_model):
    """Between DENSE_FULL_YAW_DEG and DENSE_NONE_YAW_DEG both point sets are fitted, the dense share falling
    linearly, so neighbouring poses get neighbouring results (no step where the set changes)."""
    refiner = LandmarkRefiner.from_model(face_model)
    truth = face(seed=31, yaw_deg=30.0)
    points = facemesh_points(face_model, truth) + np.random.default_rng(3).normal(0, 1.0, (468, 2))
    lo, hi = landmark_fit.DENSE_FULL_YAW_DEG, landmark_fit.DENSE_NONE_YAW_DEG

    def start_at(yaw_deg: float) -> FaceParams:
        p = perturbed(truth, seed=32)
        return replace(p, rotation=np.array([np.radians(yaw_deg), *p.rotation[1:]], np.float32))

    assert refiner.dense_weight(start_at(0.5 * (lo + hi)), points) == pytest.approx(0.5, abs=1e-4)
    middle = refiner.refine(start_at(0.5 * (lo + hi)), points, SIZE, max_disagreement=1.0)
    assert middle.points == "dense 50% + inner 51" and middle.rms_after_px < 0.5 * middle.rms_before_px
    for edge, inside, outside in ((lo, "dense", "dense 100% + inner 51"), (hi, "dense 0% + inner 51", "inner 51")):
        a = refiner.refine(start_at(edge - 0.01), points, SIZE, max_disagreement=1.0)
        b = refiner.refine(start_at(edge + 0.01), points, SIZE, max_disagreement=1.0)
        assert (a.points, b.points) == (inside, outside)
        np.testing.assert_allclose(a.params.identity, b.params.identity, atol=0.02)
        np.testing.assert_allclose(a.params.rotation, b.params.rotation, atol=np.radians(0.1))


def test_jacobian_with_corrective_unknowns_matches_finite_differences(dense):
    p = replace(face(), corrective=np.random.default_rng(5).normal(0, 0.1, (7, 3)).astype(np.float32))
    target = np.asarray(landmarks_2d(dense, p, SIZE, SIZE), np.float64) + 2.0
    settings = LandmarkFitSettings(sigma_px=1.7, n_corrective=12, corrective_prior=30.0)
    prob, ref, theta = problem(dense, p, target, np.ones(len(target)), settings)
    assert len(theta) == 60 + 53 + 36 + 6
    np.testing.assert_array_equal(theta[113:134], p.corrective.reshape(-1))   # start widened 7 → 12
    assert not theta[134:149].any()
    np.testing.assert_allclose(prob.prior[113:116], 30.0)
    assert np.all(np.diff(prob.prior[113:149:3]) > 0)                       # eigenvalue-weighted
    np.testing.assert_array_equal(prob.prior, ref.prior)
    np.testing.assert_array_equal(prob.prior_mean, ref.prior_mean)
    theta = theta + np.random.default_rng(6).normal(0, 0.02, theta.shape)
    jac = prob.jacobian(prob.state(theta)).copy()
    eps = 1e-6
    fd = np.stack([(prob.residual(theta + eps * e) - prob.residual(theta - eps * e)) / (2 * eps)
                   for e in np.eye(len(theta))], 1)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())
    np.testing.assert_allclose(jac, ref.jacobian(theta), rtol=1e-11, atol=1e-11 * np.abs(jac).max())


def test_corrective_fit_recovers_a_field_the_model_cannot_make(face_model, dense):
    """Points of a face with a corrective field: the fit with the field gets closer in 3-D than without,
    and a start's field that is not fitted stays in the model points."""
    truth = replace(face(3), corrective=np.random.default_rng(9).normal(0, 0.15, (20, 3)).astype(np.float32))
    target = np.asarray(landmarks_2d(dense, truth, SIZE, SIZE), np.float64)
    start = replace(truth, corrective=np.zeros((0, 3), np.float32))
    region = face_model.arrays.subset(face_model.vertex_range("face"))

    def error_mm(p):
        a, b = mesh_model_space(region, p), mesh_model_space(region, truth)
        return 10 * np.linalg.norm(procrustes_align(a, b) - b, axis=1).mean()

    plain = fit_landmarks(dense, start, target, SIZE, SIZE, LandmarkFitSettings(sigma_px=1.0, steps=15))
    corr = fit_landmarks(dense, start, target, SIZE, SIZE,
                         LandmarkFitSettings(sigma_px=1.0, steps=15, n_corrective=20, corrective_prior=1.0))
    assert corr.params.corrective.shape == (20, 3) and plain.params.corrective.shape == (0, 3)
    assert error_mm(corr.params) < 0.8 * error_mm(plain.params)
    kept = fit_landmarks(dense, truth, target, SIZE, SIZE, LandmarkFitSettings(steps=0))
    assert kept.rms_before_px < 1e-3                       # the start's field is in the fitted points
    np.testing.assert_array_equal(kept.params.corrective, truth.corrective)


def test_refiner_fits_the_field_by_default_and_not_without_harmonics(face_model, monkeypatch):
    from facemodel import model as model_module

    assert LandmarkRefiner.from_model(face_model).dense_settings.n_corrective == 20
    assert LandmarkRefiner.from_model(face_model, corrective_prior=0).settings.n_corrective == 0
    no_field = model_module.FaceModel.__new__(model_module.FaceModel)     # Blender without scipy: no basis
    no_field.__dict__.update(face_model.__dict__)
    no_field.__dict__["arrays"] = replace(face_model.arrays, corrective_basis=np.zeros((face_model.n_vertices, 0),
                                                                                      np.float32))
    assert LandmarkRefiner.from_model(no_field).settings.n_corrective == 0


def test_float32_gram_fits_the_same_cost_to_the_same_minimum(face_model, monkeypatch):
    """The photo refinements' float32 JᵀJ (split over two threads or not) minimises the same float64 cost: its
    fits end at the float64 fit's cost to 1e-6 and its parameters within what no figure shows."""
    refiner = LandmarkRefiner.from_model(face_model)
    rng = np.random.default_rng(11)
    for seed, yaw in ((70, -20.0), (71, 15.0)):
        truth = face(seed=seed, yaw_deg=yaw)
        start = as_float64(perturbed(truth, seed=seed + 10))
        pixels = np.asarray(landmarks_2d(refiner.dense_arrays, truth, SIZE, SIZE), np.float64) \
            + rng.normal(0, 1.0, (len(refiner.dense_arrays.neutral), 2))
        settings = refiner.dense_settings
        assert settings.gram == "float32" and settings.n_corrective > 0
        exact = fit_landmarks(refiner.dense_arrays, start, pixels, SIZE, SIZE, replace(settings, gram="float64"))
        fits = []
        for threads in (1, 2):
            monkeypatch.setattr(landmark_solver, "GRAM_THREADS", threads)
            fits.append(fit_landmarks(refiner.dense_arrays, start, pixels, SIZE, SIZE, settings))
        a, b = fits                     # the same sums in the same order on one thread or two
        for name in ("identity", "expression", "corrective", "rotation", "translation"):
            np.testing.assert_array_equal(getattr(a.params, name), getattr(b.params, name))
        for fit in fits:
            assert fit.rms_after_px == pytest.approx(exact.rms_after_px, rel=1e-4)
            np.testing.assert_allclose(fit.params.rotation, exact.params.rotation, atol=1e-4)
            np.testing.assert_allclose(fit.params.translation, exact.params.translation, atol=1e-3)
            np.testing.assert_allclose(fit.params.expression, exact.params.expression, atol=1e-3)
    with pytest.raises(ValueError, match="gram"):
        LandmarkFitSettings(gram="float16")


def test_float32_normal_equations(dense):
    """The float32 Gram's normal equations: Jᵀr, taken through the basis without J (Σ B_iᵀ ℓ_iᵀ r_i), is the
    reference's to float64 rounding; JᵀJ is the reference's to float32 rounding, the same on one thread or two;
    prepared before the targets (``Problem.prepare``) they are the very numbers."""
    p = face(seed=3, yaw_deg=-12.0)
    n = dense.neutral.shape[0]
    target = np.asarray(landmarks_2d(dense, p, SIZE, SIZE), np.float64) + np.random.default_rng(2).normal(0, 2, (n, 2))
    settings = LandmarkFitSettings(sigma_px=1.5, expression_prior=4.0, gram="float32")
    fast, ref, theta0 = problem(dense, p, target, np.linspace(0.5, 1.5, n), settings, p.identity + 0.2)
    theta = fast.clip(theta0 + np.random.default_rng(0).normal(0, 0.05, theta0.shape))
    ref_jac = ref.jacobian(theta)
    want_normal = ref_jac.T @ ref_jac + np.diag(ref.prior)
    want_grad = ref_jac.T @ ref.residual(theta) + ref.prior * (theta - ref.prior_mean)
    results = []
    for threads in (1, 2):
        landmark_solver.set_gram_threads(threads)
        try:
            normal, grad = fast.normal_equations(fast.state(theta))
            results.append((symmetric(normal), grad.copy()))
        finally:
            landmark_solver.set_gram_threads(landmark_solver.PHOTO_THREADS)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for normal, grad in results:
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-10 * np.abs(want_grad).max())
        np.testing.assert_allclose(normal, want_normal, rtol=1e-4, atol=1e-5 * np.abs(want_normal).max())
    # prepared without targets, then the state at that very θ: the same matrix and gradient
    later, _ = fit_problem(FitBasis.from_arrays(dense), p, None, SIZE, SIZE, settings, np.linspace(0.5, 1.5, n),
                           p.identity + 0.2)
    geometry = later.prepare(theta)
    with pytest.raises(RuntimeError, match="target"):
        later.state(theta)
    later.set_targets(target)
    normal, grad = later.normal_equations(later.state(theta, geometry))
    np.testing.assert_array_equal(symmetric(normal), results[1][0])
    np.testing.assert_array_equal(grad, results[1][1])


def test_prepared_refinement_is_the_refinement(face_model):
    """``LandmarkRefiner.prepare`` (made before the points, as the photo path does beside FaceMesh) then
    ``refine(points)`` gives the very numbers of ``refine``: dense, blended and inner-51 fits, a face the gate
    distrusts, ignored (non-finite) points; a prepared fit refuses a different number of points."""
    refiner = LandmarkRefiner.from_model(face_model)
    rng = np.random.default_rng(5)
    for seed, yaw in ((80, 5.0), (81, 27.0), (82, 55.0)):
        truth = face(seed=seed, yaw_deg=yaw)
        start = perturbed(truth, seed=seed + 5)
        points = facemesh_points(face_model, truth) + rng.normal(0, 1.0, (len(MEDIAPIPE_TO_ICT), 2))
        far = points + 40.0
        holes = points.copy()
        holes[[5, 200]] = np.nan
        for pts in (points, points[list(MEDIAPIPE_TO_68)], far, holes):
            want = refiner.refine(start, pts, SIZE, max_disagreement=0.3)
            got = refiner.prepare(start, SIZE, len(pts), max_disagreement=0.3).refine(pts)
            assert (got.points, got.skipped, got.steps_accepted) == (want.points, want.skipped, want.steps_accepted)
            assert got.rms_after_px == want.rms_after_px
            for name in ("identity", "expression", "corrective", "rotation", "translation"):
                np.testing.assert_array_equal(getattr(got.params, name), getattr(want.params, name))
            assert bool(want.skipped) == (pts is far)
            # (the start is turned 4° more than the truth)
            assert pts is far or want.points == ("inner 51" if len(pts) == 68 or yaw > 40 else
                                                 "dense" if yaw < 20 else "dense 45% + inner 51")
    with pytest.raises(ValueError, match="prepared for 468"):
        refiner.prepare(start, SIZE, 468).refine(points[list(MEDIAPIPE_TO_68)])
