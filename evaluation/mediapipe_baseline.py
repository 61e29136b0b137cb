"""MediaPipe FaceMesh as a peer baseline on the 68-point benchmarks.

FaceMesh predicts 468 dense points; the benchmarks score 68 iBUG/Multi-PIE points. The map
``facemodel.landmark_maps.MEDIAPIPE_TO_68`` picks one FaceMesh index per iBUG point (the add-on's
detector uses the same table). How it was made (facts):

1. **Candidates by semantics, not by data.** Each iBUG group may only take FaceMesh indices
   from the matching published semantic set of ``mediapipe.python.solutions.face_mesh_connections``
   (mediapipe 0.10.21): jaw 0–16 ← ``FACEMESH_FACE_OVAL``; brows 17–21 / 22–26 ←
   ``FACEMESH_RIGHT_EYEBROW`` / ``FACEMESH_LEFT_EYEBROW`` (MediaPipe's "right" is the subject's
   right, the image left, as iBUG's 17–21); nose 27–35 ← ``FACEMESH_NOSE``; eyes 36–41 / 42–47 ←
   ``FACEMESH_RIGHT_EYE`` / ``FACEMESH_LEFT_EYE``; outer lips 48–59 / inner lips 60–67 ← the outer /
   inner loop of ``FACEMESH_LIPS``.
2. **Position from the ICT-FaceKit definition of the 68 points.** Eye and lip loops are split
   at their extreme-x vertices into corners, upper and lower arcs (so an upper-lid point can
   only take an upper-lid vertex). Each iBUG point then takes the FaceMesh vertex of its group
   that lies nearest to where ICT-FaceKit's own Multi-PIE-68 vertex (``landmarks_multipie68``
   of the mean face) lands, in 3-D, after a similarity alignment of the two point sets, with a
   one-to-one (Hungarian) assignment inside each group. The alignment starts from six corner
   anchors (eye corners 36/39/42/45 ↔ 33/133/362/263, mouth corners 48/54 ↔ 61/291) and is
   refined ICP-style on all 68 correspondences until the assignment is stable (3 iterations);
   the 3-D fit removes the pitch difference between ICT's neutral head and the photos.
3. **The FaceMesh side is a mean shape of images that are not the test set**: the four
   ``faces/demo`` photos and the first 60 ``faces/unlabeled/utkface_200`` crops (sorted names),
   FaceMesh's 3-D points aligned onto the first face by a similarity on all 468 points. No
   68-point label of any dataset was used, so the map is not fitted to Helen (or any benchmark)
   and uses the same landmark semantics as facerig's own model (ICT's 68 vertices).
   :func:`derive_mapping` reproduces the table (``python -m evaluation.mediapipe_baseline derive``;
   FaceMesh on 64 small images, ~2 s); the result is symmetric under FaceMesh's left/right
   vertex pairs without that being imposed.

The ICT jaw points are its fixed 3-D jawline; on a frontal mean face they lie on the face oval,
so the nearest-oval-vertex rule gives a contour-like jaw, which is what FaceMesh's oval is.

Pose (reported per image; the benchmark's bins use the annotation's yaw) comes from a PnP fit of
ICT-FaceKit's mean-face inner 51 landmarks to the mapped points, with facerig's crop camera
(:mod:`evaluation.pose`), so MediaPipe's yaw and facerig's are in the same convention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facemodel.landmark_maps import MEDIAPIPE_TO_68

from .imaging import Box, box_iou, crop_square, crop_to_photo, load_image, points_box
from .pose import ict_mean_landmarks, pnp_pose

log = logging.getLogger(__name__)


ANCHORS_68 = (36, 39, 42, 45, 48, 54)
ANCHORS_MP = (33, 133, 362, 263, 61, 291)
CROP_SIZE = 256


# -- semantic candidate sets -------------------------------------------------------------------
def _edges_vertices(edges: Iterable[tuple[int, int]]) -> set[int]:
    return {v for e in edges for v in e}


def _components(edges: Iterable[tuple[int, int]]) -> list[set[int]]:
    """Connected components of an edge set (the lips set holds two loops)."""
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    seen: set[int] = set()
    comps = []
    for start in adj:
        if start in seen:
            continue
        comp, stack = set(), [start]
        while stack:
            v = stack.pop()
            if v in comp:
                continue
            comp.add(v)
            stack.extend(adj[v] - comp)
        seen |= comp
        comps.append(comp)
    return comps


def _cycle(edges: Iterable[tuple[int, int]]) -> list[int]:
    """Vertices of a closed loop of edges in walking order."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    if any(len(n) != 2 for n in adj.values()):
        raise RuntimeError("edge set is not a single closed loop")
    start = min(adj)
    order, prev, cur = [start], None, start
    while True:
        nxt = adj[cur][0] if adj[cur][0] != prev else adj[cur][1]
        if nxt == start:
            break
        order.append(nxt)
        prev, cur = cur, nxt
    if len(order) != len(adj):
        raise RuntimeError("edge set holds more than one loop")
    return order


def _split_loop(loop: list[int], mesh: np.ndarray) -> tuple[int, int, list[int], list[int]]:
    """(left corner, right corner, upper arc, lower arc) of an eye or lip loop on a frontal shape.

    Corners are the loop's extreme-x vertices; the arc with the smaller mean y (image y down)
    is the upper one. Arcs exclude the corners.
    """
    xs = mesh[loop, 0]
    i0, i1 = int(np.argmin(xs)), int(np.argmax(xs))
    a, b = sorted((i0, i1))
    arc1, arc2 = loop[a + 1:b], loop[b + 1:] + loop[:a]
    upper, lower = (arc1, arc2) if mesh[arc1, 1].mean() < mesh[arc2, 1].mean() else (arc2, arc1)
    return loop[i0], loop[i1], upper, lower


Group = tuple[tuple[int, ...], tuple[int, ...]]  # (iBUG points, allowed FaceMesh indices)


def candidate_groups(mesh: np.ndarray) -> list[Group]:
    """Assignment groups from mediapipe's published connection sets, split on the mean shape.

    Eye and lip loops are split into corners, upper and lower arcs so an upper-lid point can
    only take an upper-lid vertex (ICT's neutral face has its lips closed, so inner upper and
    lower lip points coincide there and position alone could not tell them apart).
    """
    from mediapipe.python.solutions import face_mesh_connections as fmc

    lips = _components(fmc.FACEMESH_LIPS)
    if len(lips) != 2:
        raise RuntimeError(f"FACEMESH_LIPS has {len(lips)} loops, expected 2 (outer, inner)")
    lip_edges = [[e for e in fmc.FACEMESH_LIPS if e[0] in comp] for comp in lips]
    loops = [_cycle(e) for e in lip_edges]
    # The outer loop is the larger one on the shape (it encloses the inner one).
    loops.sort(key=lambda lp: -np.ptp(mesh[lp, 0]))
    groups: list[Group] = [
        (tuple(range(0, 17)), tuple(sorted(_edges_vertices(fmc.FACEMESH_FACE_OVAL)))),
        (tuple(range(17, 22)), tuple(sorted(_edges_vertices(fmc.FACEMESH_RIGHT_EYEBROW)))),
        (tuple(range(22, 27)), tuple(sorted(_edges_vertices(fmc.FACEMESH_LEFT_EYEBROW)))),
        (tuple(range(27, 36)), tuple(sorted(_edges_vertices(fmc.FACEMESH_NOSE)))),
    ]
    # iBUG order: eye = outer/inner corner, two upper, inner/outer corner, two lower (clockwise
    # in the image); lips likewise from the image-left corner. Corners by image x.
    for (c_left, ups, c_right, lows), edges in (
            ((36, (37, 38), 39, (40, 41)), fmc.FACEMESH_RIGHT_EYE),
            ((42, (43, 44), 45, (46, 47)), fmc.FACEMESH_LEFT_EYE)):
        left, right, upper, lower = _split_loop(_cycle(edges), mesh)
        groups += [((c_left,), (left,)), ((c_right,), (right,)), (ups, tuple(upper)), (lows, tuple(lower))]
    for (c_left, ups, c_right, lows), loop in (((48, (49, 50, 51, 52, 53), 54, (55, 56, 57, 58, 59)), loops[0]),
                                               ((60, (61, 62, 63), 64, (65, 66, 67)), loops[1])):
        left, right, upper, lower = _split_loop(loop, mesh)
        groups += [((c_left,), (left,)), ((c_right,), (right,)), (ups, tuple(upper)), (lows, tuple(lower))]
    return groups


# -- FaceMesh runner ---------------------------------------------------------------------------------
@dataclass
class MeshFace:
    """One FaceMesh result in photo pixels: 468 points (x, y) plus relative depth (z, x-scaled)."""

    points: np.ndarray  # (468, 3)

    @property
    def points68(self) -> np.ndarray:
        return self.points[list(MEDIAPIPE_TO_68), :2]


class FaceMeshRunner:
    """Static-image FaceMesh (mediapipe legacy solution; models ship inside the wheel)."""

    def __init__(self, max_faces: int = 3, min_confidence: float = 0.3) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=False,
            min_detection_confidence=min_confidence)

    def __call__(self, image_rgb: np.ndarray) -> list[MeshFace]:
        h, w = image_rgb.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(image_rgb))
        out = []
        for face in res.multi_face_landmarks or []:
            # Normalised x, y → pixels (corner origin: MediaPipe's 0..1 spans the image edges);
            # z is "roughly the same scale as x", so scale it by the width too.
            a = np.array([[p.x * w, p.y * h, p.z * w] for p in face.landmark[:468]], np.float64)
            out.append(MeshFace(a))
        return out

    def centred_points(self, crop_rgb: np.ndarray, size: int) -> np.ndarray | None:
        """(468, 2) points of the face nearest the centre of a square crop (the canonical crop centres
        its face), in pixels of the same crop at ``size``; None when FaceMesh finds no face."""
        faces = self(crop_rgb)
        if not faces:
            return None
        side = crop_rgb.shape[0]
        face = min(faces, key=lambda f: float(np.linalg.norm(f.points68.mean(0) - side / 2)))
        return face.points[:, :2] * size / side

    def close(self) -> None:
        self._mesh.close()


# -- the predictor ----------------------------------------------------------------------------
@dataclass
class MediaPipePrediction:
    points68: np.ndarray   # (68, 2) photo pixels
    rotation: np.ndarray   # (3,) yaw, pitch, roll radians (PnP)
    crop_box: Box
    points: np.ndarray     # (468, 2) all FaceMesh points, photo pixels (what the dense refinement fits)


class MediaPipeLandmarks:
    """68 points from FaceMesh for the face in ``box`` (GT landmark box or a detection box).

    FaceMesh runs on the same canonical crop facerig would see (square, 1.6 × the landmark box,
    resampled to 256²), so both methods start from identical information; among the faces
    FaceMesh finds in the crop, the one whose 68-point box overlaps ``box`` most is kept.
    """

    name = "mediapipe"

    def __init__(self, crop_size: int = CROP_SIZE, model_path: str | None = None) -> None:
        self.runner = FaceMeshRunner()
        self.crop_size = crop_size
        self.reference = ict_mean_landmarks(model_path)

    def predict(self, image: np.ndarray, crop_box: Box, box: Box) -> MediaPipePrediction | None:
        """FaceMesh on ``crop_box``; of the faces found, the one overlapping ``box`` most."""
        crop = crop_square(image, crop_box, self.crop_size)
        faces = self.runner(crop)
        if not faces:
            return None
        best, best_iou = None, -1.0
        for f in faces:
            pts = crop_to_photo(f.points[:, :2], crop_box, self.crop_size)
            iou = box_iou(points_box(pts[list(MEDIAPIPE_TO_68)]), box)
            if iou > best_iou:
                best, best_iou = pts, iou
        assert best is not None
        points68 = best[list(MEDIAPIPE_TO_68)]
        rot = pnp_pose(points68, self.reference, crop_box)
        return MediaPipePrediction(points68, rot, crop_box, best)

    def close(self) -> None:
        self.runner.close()


# -- derivation of the map (documentation, reproducible) ------------------------------------------
def reference_images(shared: Path, n_utk: int = 60) -> list[Path]:
    """The non-benchmark images the map was derived on (see the module docstring)."""
    demo = sorted((shared / "faces" / "demo").glob("*"))
    utk = sorted((shared / "faces" / "unlabeled" / "utkface_200").glob("*.jpg"))[:n_utk]
    return [p for p in demo + utk if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def similarity_fit_3d(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, R 3×3, t) minimising ‖s R src + t − dst‖² (Umeyama, no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    dm = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ dm @ vt
    scale = float((sig * np.diag(dm)).sum() / (a * a).sum())
    return scale, rot, md - scale * rot @ ms


def mean_facemesh_shape(images: Sequence[Path]) -> np.ndarray:
    """(468, 3) mean FaceMesh shape (pixels, z scaled like x), each face aligned onto the first.

    All 468 points take part in the 3-D similarity alignment (same topology, so every index
    is a correspondence), which removes each photo's head pose from the mean.
    """
    runner = FaceMeshRunner(max_faces=1)
    shapes = []
    for path in images:
        faces = runner(load_image(path))
        if faces:
            shapes.append(faces[0].points)
    runner.close()
    if not shapes:
        raise RuntimeError("FaceMesh found no face in the reference images")
    ref = shapes[0]
    aligned = []
    for s in shapes:
        sc, r, t = similarity_fit_3d(s, ref)
        aligned.append(sc * s @ r.T + t)
    log.info("mean FaceMesh shape from %d of %d images", len(shapes), len(images))
    return np.mean(aligned, 0)


def derive_mapping(images: Sequence[Path], model_path: str | None = None, iterations: int = 20
                   ) -> tuple[int, ...]:
    """Re-derive ``MEDIAPIPE_TO_68`` (module docstring, steps 1–3).

    ICP between the two 68-point sets in 3-D: start from a similarity fit on the six corner
    anchors, then alternate (a) one-to-one assignment (Hungarian, summed distance) of each
    group's iBUG points to its allowed FaceMesh vertices and (b) a similarity re-fit on all 68
    correspondences, until the assignment stops changing. Doing it in 3-D and re-fitting on all
    points removes the pitch difference between ICT's neutral head and the photos' mean head,
    which in a 2-D fit moved the nose tip by a vertex or two.
    """
    from scipy.optimize import linear_sum_assignment

    mesh = mean_facemesh_shape(images)
    ict = ict_mean_landmarks(model_path)
    # ICT model space (+y up, +z towards the viewer) → FaceMesh's (+y down, smaller z is closer).
    ict3 = np.stack([ict[:, 0], -ict[:, 1], -ict[:, 2]], -1)
    groups = candidate_groups(mesh[:, :2])
    fit = similarity_fit_3d(ict3[list(ANCHORS_68)], mesh[list(ANCHORS_MP)])
    mapping: list[int] = []
    for it in range(iterations):
        s, r, t = fit
        target = s * ict3 @ r.T + t
        new = [-1] * 68
        for points, allowed in groups:
            cand = np.asarray(allowed)
            cost = np.linalg.norm(mesh[cand][None, :, :] - target[list(points)][:, None, :], axis=-1)
            rows, cols = linear_sum_assignment(cost)
            for i, j in zip(rows, cols):
                new[points[i]] = int(cand[j])
        if new == mapping:
            log.info("mapping converged after %d iterations", it)
            break
        mapping = new
        fit = similarity_fit_3d(ict3, mesh[mapping])
    if min(mapping) < 0:
        raise RuntimeError("derivation left points unassigned")
    return tuple(mapping)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="re-derive the FaceMesh → iBUG-68 map")
    parser.add_argument("action", choices=["derive"])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    mapping = derive_mapping(reference_images(args.shared), args.model)
    print("derived:", mapping)
    print("matches MEDIAPIPE_TO_68:", mapping == MEDIAPIPE_TO_68)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
