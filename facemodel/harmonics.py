"""Manifold harmonics of the face region: the basis of the corrective displacement field.

Why: ICT-FaceKit's identity modes cannot follow every real face. Like the multi-landmark-database
fusion paper, facerig adds a smooth corrective displacement expressed in the first K eigenfunctions of
the face region's Laplace–Beltrami operator (its "manifold harmonics", the Fourier basis of a curved
surface): low modes are broad, smooth bumps, higher ones finer ripples, so a few coefficients per axis
describe a plausible shape change and an eigenvalue-weighted prior keeps it smooth.

Discretisation (ICT's neutral mesh, vertices 0–9408 = the "face" range, the polygons whose corners all
lie in it, quads split in two triangles):

* cotangent stiffness matrix ``L`` (positive semi-definite, ``L_ij = −½ (cot α_ij + cot β_ij)``),
* lumped (barycentric) mass matrix ``M``, divided by the region's total area, so a basis function has
  RMS 1 over the surface and a coefficient is the area-weighted RMS displacement it causes, in cm,
* Dirichlet condition (displacement 0) on the region's outer boundary, where the face meets the back of
  the head and the neck, so the field fades into the unchanged head; natural (free) condition on the
  inner boundaries at the eyes and the mouth, so eyelids and lips can move,
* the generalised eigenproblem ``L φ = λ M φ`` solved by ``scipy.sparse.linalg.eigsh`` in shift-invert
  mode about 0 for the K smallest eigenvalues; ``Φᵀ M Φ = I``.

Sign convention (eigenvectors are defined up to sign): each φ_k is flipped so that the first of its
M-inner products with 1, x, y, z (neutral coordinates) whose size exceeds 1e-6 is positive — a
left–right antisymmetric mode has a zero mean but a non-zero product with x. Exactly repeated eigenvalues
would leave the basis of their eigenspace arbitrary; the face region has none (tests check the gaps).

Vertices outside the region (eye sockets, lashes, mouth socket, teeth, head) take the value of their
nearest region vertex on the neutral mesh, faded with distance (Gaussian, ``FALLOFF_CM``), so lashes
follow the eyelids and the mouth socket the lips; each eyeball moves rigidly by the mean of its faded
values (a smooth field is nearly constant across an eye). The head next to the outer boundary gets ≈ 0.

The regulariser is the field's Dirichlet (bending-free smoothness) energy, ``Σ_k λ_k |c_k|²`` for
coefficients c_k ∈ R³, made dimensionless by λ_1: :func:`corrective_prior_weights`.

Computing the basis takes ≈ 0.3–0.5 s of CPU (:func:`compute_harmonics`, K = 20; K = 40: 1.4 s);
:func:`load_harmonics` caches it (2 MB) in facerig's user cache, keyed by a hash of the mesh it came
from (:func:`cache_path`); reading it back takes a few ms.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .mesh import FaceMesh, cache_dir

log = logging.getLogger(__name__)

DEFAULT_K = 20                 # harmonics per axis (60 coefficients)
K_MAX = 64                     # the most a layout may carry
FALLOFF_CM = 1.0               # how far off the region the field fades (Gaussian σ)
REGION = "face"                # facemodel.mesh.VERTEX_RANGES key of the domain
_METHOD_VERSION = 1            # bump when the discretisation changes: invalidates caches
_SIGN_TOL = 1e-6
CACHE_SUBDIR = "harmonics"
_SEARCH_DIRS: list[Path] = []  # read-only folders with precomputed bases (add_search_dir)


@dataclass(frozen=True)
class Harmonics:
    """The first K manifold harmonics of the face region, extended to every vertex of the model."""

    basis: np.ndarray          # (V, K) float32, all vertices of the model (zero far from the region)
    eigenvalues: np.ndarray    # (K,) float64, ascending, > 0 (Dirichlet boundary)
    region: np.ndarray         # (R,) int64 vertex indices of the region
    mass: np.ndarray           # (R,) float64 lumped mass of the region's vertices, sums to 1

    @property
    def k(self) -> int:
        return int(self.basis.shape[1])

    def region_basis(self) -> np.ndarray:
        """(R, K) float64 basis on the region (what ``Φᵀ M Φ = I`` holds for)."""
        return self.basis[self.region].astype(np.float64)


def _triangles(model: FaceMesh, region: np.ndarray) -> np.ndarray:
    from .geometry import triangulate

    inside = np.zeros(model.n_vertices + 1, bool)
    inside[region] = True
    faces = model.faces
    corners = np.where(faces >= 0, faces, model.n_vertices)   # padding → an "outside" slot
    is_tri = faces[:, 3] < 0
    full = inside[corners[:, :3]].all(1) & (is_tri | inside[corners[:, 3]])
    return triangulate(faces[full])


def cotangent_laplacian(vertices: np.ndarray, triangles: np.ndarray) -> tuple[Any, np.ndarray]:
    """(V, V) cotangent stiffness matrix ``L`` (scipy CSR; PSD, rows sum to 0) and (V,) lumped vertex areas."""
    import scipy.sparse as sp

    v = np.asarray(vertices, np.float64)
    n = len(v)
    rows, cols, vals = [], [], []
    areas = np.zeros(n)
    a, b, c = (v[triangles[:, i]] for i in range(3))
    double_area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    np.add.at(areas, triangles.reshape(-1), np.repeat(double_area / 6.0, 3))
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):   # the angle at k faces the edge (i, j)
        pi, pj, pk = v[triangles[:, i]], v[triangles[:, j]], v[triangles[:, k]]
        u, w = pi - pk, pj - pk
        cot = (u * w).sum(1) / np.maximum(np.linalg.norm(np.cross(u, w), axis=1), 1e-12)
        rows += [triangles[:, i], triangles[:, j]]
        cols += [triangles[:, j], triangles[:, i]]
        vals += [-0.5 * cot, -0.5 * cot]
    off = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    diag = -np.asarray(off.sum(1)).ravel()
    return (off + sp.diags(diag)).tocsr(), areas


def _outer_boundary(triangles: np.ndarray, n: int) -> np.ndarray:
    """Vertices of the longest boundary loop (the face region's outline; the others are eyes and mouth)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), 1)
    uniq, count = np.unique(edges, axis=0, return_counts=True)
    border = uniq[count == 1]
    graph = sp.coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(n, n))
    _, label = connected_components(graph + graph.T, directed=False)
    loop_vertices = np.unique(border)
    loops = label[loop_vertices]
    longest = np.bincount(loops).argmax()
    return loop_vertices[loops == longest]


def _fix_signs(phi: np.ndarray, mass: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The module's sign convention: the first sizeable M-product with 1, x, y, z is positive."""
    probes = np.concatenate([np.ones((len(coords), 1)), coords - (mass[:, None] * coords).sum(0)], 1)
    for k in range(phi.shape[1]):
        dots = probes.T @ (mass * phi[:, k])
        first = np.flatnonzero(np.abs(dots) > _SIGN_TOL)
        if len(first) and dots[first[0]] < 0:
            phi[:, k] = -phi[:, k]
    return phi


def compute_harmonics(model: FaceMesh, k: int = DEFAULT_K) -> Harmonics:
    """Solve ``L φ = λ M φ`` on the face region (module docstring) for its ``k`` smoothest modes."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    if not 1 <= k <= K_MAX:
        raise ValueError(f"k must be in 1..{K_MAX}, got {k}")
    region = model.vertex_range(REGION).astype(np.int64)
    local = np.full(model.n_vertices, -1, np.int64)
    local[region] = np.arange(len(region))
    tri = local[_triangles(model, region)]
    coords = np.asarray(model.neutral[region], np.float64)
    stiff, areas = cotangent_laplacian(coords, tri)
    mass = areas / areas.sum()
    free = np.ones(len(region), bool)
    free[_outer_boundary(tri, len(region))] = False
    used = np.zeros(len(region), bool)
    used[tri.reshape(-1)] = True
    free &= used
    idx = np.flatnonzero(free)
    l_ff = stiff[idx][:, idx].tocsc()
    m_ff = sp.diags(mass[idx]).tocsc()
    v0 = np.ones(len(idx))   # a fixed start vector: the same basis on every run
    vals, vecs = sla.eigsh(l_ff, k=k, M=m_ff, sigma=0.0, which="LM", v0=v0)
    order = np.argsort(vals)
    vals, vecs = vals[order], vecs[:, order]
    phi = np.zeros((len(region), k))
    phi[idx] = vecs
    phi /= np.sqrt(np.einsum("vk,v,vk->k", phi, mass, phi))[None]
    phi = _fix_signs(phi, mass, coords)
    basis = extend_to_model(model, region, phi)
    return Harmonics(basis.astype(np.float32), vals.astype(np.float64), region, mass)


def extend_to_model(model: FaceMesh, region: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """(V, K): ``phi`` on the region, elsewhere the nearest region vertex's value faded with distance."""
    from scipy.spatial import cKDTree

    out = np.zeros((model.n_vertices, phi.shape[1]))
    out[region] = phi
    outside = np.setdiff1d(np.arange(model.n_vertices), region)
    dist, nearest = cKDTree(model.neutral[region]).query(model.neutral[outside])
    out[outside] = phi[nearest] * np.exp(-0.5 * (dist / FALLOFF_CM) ** 2)[:, None]
    for eye in ("eyeball_left", "eyeball_right"):
        verts = model.vertex_range(eye)
        out[verts] = out[verts].mean(0)
    return out


def corrective_prior_weights(eigenvalues: np.ndarray) -> np.ndarray:
    """(K,) ``λ_k / λ_1``: the regulariser ``ρ Σ_k w_k |c_k|²`` is ρ × the field's Dirichlet energy in
    units of the smoothest mode's (so ρ is the precision, 1/cm², of the first mode's coefficient)."""
    lam = np.asarray(eigenvalues, np.float64)
    return lam / lam[0]


class HarmonicsUnavailable(RuntimeError):
    """The basis is neither cached nor computable here (no scipy, e.g. inside Blender)."""


def corrective_displacement(basis: np.ndarray, coefficients: np.ndarray):
    """(…, V, 3) displacement of a field with ``coefficients`` (…, Kc, 3) in the first Kc columns of
    ``basis`` (V, K). Works on numpy arrays and torch tensors; Kc = 0 gives zeros."""
    kc = coefficients.shape[-2]
    if basis.shape[1] < kc:
        raise HarmonicsUnavailable(
            f"the face has {kc} corrective coefficients per axis but the model's basis has {basis.shape[1]} "
            "harmonics (computing them needs scipy; `facerig model harmonics` caches them next to the model)")
    return basis[:, :kc] @ coefficients


def corrective_point_basis(basis: np.ndarray, n_corrective: int) -> np.ndarray:
    """(3·Kc, N, 3) float64 displacement per unit coefficient, in the flat order of ``FaceParams.corrective``
    ((harmonic, axis) row-major), at the N vertices of ``basis`` (N, K): the field as linear unknowns of a
    fit, like the identity and expression blendshapes."""
    phi = np.asarray(basis, np.float64)[:, :n_corrective]
    out = np.zeros((n_corrective, 3, phi.shape[0], 3))
    for axis in range(3):
        out[:, axis, :, axis] = phi.T
    return out.reshape(3 * n_corrective, phi.shape[0], 3)


def corrective_prior_precision(eigenvalues: np.ndarray, n_corrective: int, strength: float) -> np.ndarray:
    """(3·Kc,) the prior's precision of each flat coefficient: ``strength`` × λ_k/λ_1, the same for x, y, z."""
    return np.repeat(strength * corrective_prior_weights(eigenvalues)[:n_corrective], 3)


# -- cache ----------------------------------------------------------------------------------------------
def mesh_key(model: FaceMesh, k: int) -> str:
    """Hash of what the basis depends on: the neutral mesh, its polygons, K and the method's version."""
    h = hashlib.sha256()
    for arr in (np.ascontiguousarray(model.neutral, np.float32), np.ascontiguousarray(model.faces, np.int32)):
        h.update(arr.tobytes())
    h.update(f"k={k};region={REGION};falloff={FALLOFF_CM};v={_METHOD_VERSION}".encode())
    return h.hexdigest()[:20]


def cache_path(model: FaceMesh, k: int = DEFAULT_K) -> Path:
    """Where the basis is cached: facerig's user cache (where ``facerig model fetch`` puts the model, so
    for the default install next to it), keyed by :func:`mesh_key`. A model elsewhere (``$FACERIG_FACE_MODEL``)
    is never written beside: its folder may be shared or read-only."""
    return cache_dir() / CACHE_SUBDIR / f"harmonics-{mesh_key(model, k)}.npz"


def add_search_dir(folder: Path) -> None:
    """Also look for precomputed bases (``harmonics-<mesh_key>.npz``) in ``folder``, read-only. Why: Blender's
    Python has no scipy to compute one, so the add-on ships ICT-FaceKit Light's basis in its ``models/``
    (:func:`save_harmonics`); any other mesh hashes differently and falls back to the cache or scipy."""
    folder = Path(folder)
    if folder not in _SEARCH_DIRS:
        _SEARCH_DIRS.append(folder)


def _read(path: Path, model: FaceMesh, k: int) -> Harmonics | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            h = Harmonics(z["basis"].astype(np.float32), z["eigenvalues"].astype(np.float64),
                          z["region"].astype(np.int64), z["mass"].astype(np.float64))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable harmonics file %s: %s", path, exc)
        return None
    return h if h.basis.shape == (model.n_vertices, k) else None


def load_harmonics(model: FaceMesh, k: int = DEFAULT_K) -> Harmonics:
    """The model's harmonics from the cache or a bundled folder, else computed (≈ 0.5 s) and cached."""
    path = cache_path(model, k)
    for candidate in [path] + [folder / path.name for folder in _SEARCH_DIRS]:
        if candidate.is_file() and (h := _read(candidate, model, k)) is not None:
            return h
    try:
        import scipy.sparse.linalg  # noqa: F401
    except ImportError:
        raise HarmonicsUnavailable(f"no cached manifold harmonics at {path} and no scipy to compute them") from None
    h = compute_harmonics(model, k)
    _store(path, h)
    return h


def save_harmonics(model: FaceMesh, folder: Path, k: int = DEFAULT_K) -> Path:
    """Write the model's basis, compressed, as ``folder/harmonics-<mesh_key>.npz`` for :func:`add_search_dir`
    (``facerig model harmonics --bundle blender_addon/models``)."""
    from .outputs import atomic_output

    h = load_harmonics(model, k)
    path = Path(folder) / cache_path(model, k).name
    with atomic_output(path) as tmp:
        np.savez_compressed(tmp, basis=h.basis, eigenvalues=h.eigenvalues, region=h.region.astype(np.int32),
                            mass=h.mass)
    return path


def _store(path: Path, h: Harmonics) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, basis=h.basis, eigenvalues=h.eigenvalues, region=h.region, mass=h.mass)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot cache harmonics at %s: %s", path, exc)
        return False
    log.info("cached the face region's manifold harmonics at %s", path)
    return True
