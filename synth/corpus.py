"""The synthetic corpus format: sharded ``np.savez`` files plus a self-describing manifest.

Readable without Blender (numpy and json only), so the learner and tools never import bpy.

Layout of a corpus directory (``LAYOUT``, DEVELOPERS.md "Corpus")::

    manifest.json        format, layout_version, ParamLayout, image_size, shard_size, counts,
                         generator settings, keys (dtype/shape per image), per-shard sha256
    shard-00000.npz      images uint8 (N,S,S,3) sRGB, params float32 (N,P), landmarks float32
    shard-00001.npz      (N,68,2), landmarks_visible_jaw float32 (N,68,2), visibility bool (N,68),
    ...                  masks uint8 (N,S,S), pose_deg float32 (N,3), seeds int64 (N,) (+ extras)

Why it is built like this:

* **Append-only and atomic.** A shard is written to ``*.part``, fsynced, hashed and renamed
  into place; only then is it entered into the manifest, which is itself replaced atomically
  (temp file, fsync, rename, directory fsync). A killed writer therefore leaves at most a stray
  ``*.part`` or an unlisted shard file, both of which the next writer removes/re-creates.
* **Deterministic shards.** Shard ``k`` holds images ``k·shard_size …``; its content depends
  only on the generator settings, the seed and ``k``, so a resumed run fills in exactly the
  missing shards and the result equals an uninterrupted run, independent of worker count.
* **Checksums.** Every shard's sha256 and byte size are in the manifest; reading a shard
  verifies them, so a truncated or corrupted file fails with a clear :class:`CorpusError`
  instead of feeding garbage to training.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from facemodel.outputs import acquire_lock, atomic_output, atomic_write_bytes, is_temp_name
from facemodel.params import LAYOUT_VERSION, LayoutError, ParamLayout

log = logging.getLogger(__name__)

FORMAT_NAME = "facerig-synth-corpus"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.npz$")
N_LANDMARKS = 68


class CorpusError(RuntimeError):
    """A corpus directory is missing, inconsistent, corrupt, or incompatible with a request."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


def key_specs(image_size: int, layout: ParamLayout) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Per-image dtype and shape of every required shard array (the contract in DEVELOPERS.md)."""
    s = int(image_size)
    return {
        "images": ("uint8", (s, s, 3)),
        "params": ("float32", (layout.size,)),
        "landmarks": ("float32", (N_LANDMARKS, 2)),
        "landmarks_visible_jaw": ("float32", (N_LANDMARKS, 2)),
        "visibility": ("bool", (N_LANDMARKS,)),
        "masks": ("uint8", (s, s)),
        "pose_deg": ("float32", (3,)),
        "seeds": ("int64", ()),
    }


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_kind_manifest(path: Path, kind: str, version: int, error: type[Exception], missing: str) -> dict[str, Any]:
    """A JSON manifest that must declare ``kind`` and ``version`` (photo corpora, reconstructions);
    ``missing`` is the message when the file is absent. Raises ``error`` with the reason."""
    if not path.is_file():
        raise error(missing)
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path} is corrupt: {exc}") from None
    if manifest.get("kind") != kind or manifest.get("version") != version:
        raise error(f"{path}: not a version-{version} {kind} directory")
    return manifest


@dataclass(frozen=True)
class ShardInfo:
    """What the manifest records about one finished shard."""

    index: int
    count: int
    sha256: str
    bytes: int

    @property
    def name(self) -> str:
        return shard_name(self.index)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "count": self.count, "sha256": self.sha256,
                "bytes": self.bytes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ShardInfo":
        try:
            info = cls(index=int(d["index"]), count=int(d["count"]), sha256=str(d["sha256"]),
                       bytes=int(d["bytes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorpusError(f"malformed shard entry in manifest: {d!r} ({exc})") from None
        if "name" in d and d["name"] != info.name:
            raise CorpusError(f"shard entry name {d['name']!r} does not match index {info.index}")
        return info


def validate_arrays(arrays: Mapping[str, np.ndarray], image_size: int, layout: ParamLayout,
                    extra_keys: Mapping[str, tuple[str, tuple[int, ...]]] | None = None) -> int:
    """Check dtypes/shapes of one shard's arrays against the contract; return the image count."""
    specs = dict(key_specs(image_size, layout))
    specs.update(extra_keys or {})
    missing = [k for k in specs if k not in arrays]
    if missing:
        raise CorpusError(f"shard arrays lack {missing}")
    unknown = [k for k in arrays if k not in specs]
    if unknown:
        raise CorpusError(f"shard arrays have undeclared keys {unknown}")
    n = int(np.asarray(arrays["images"]).shape[0])
    if n < 1:
        raise CorpusError("a shard must hold at least one image")
    for key, (dtype, shape) in specs.items():
        a = np.asarray(arrays[key])
        if a.dtype != np.dtype(dtype) or a.shape != (n,) + tuple(shape):
            raise CorpusError(f"shard array {key!r} is {a.dtype}{list(a.shape)}, "
                              f"expected {dtype}{[n, *shape]}")
    return n


def write_shard_file(directory: Path | str, index: int, arrays: Mapping[str, np.ndarray]) -> ShardInfo:
    """Atomically write ``shard-<index>.npz`` (plain ``np.savez``) and return its checksum entry.

    Safe to call from worker processes: it touches only its own shard file. The shard is not
    part of the corpus until :meth:`CorpusWriter.add_shard` records it in the manifest.
    """
    final = Path(directory) / shard_name(index)
    n = int(np.asarray(arrays["images"]).shape[0])
    with atomic_output(final, keep_suffix=False, clean_stale=False) as tmp:   # the writer cleans at its start
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
    return ShardInfo(index=index, count=n, sha256=digest, bytes=size)


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not path.exists():
        raise CorpusError(f"corpus not found: {path}")
    if not path.is_dir():
        raise CorpusError(f"{path} is not a corpus directory (it is a file)")
    if not mpath.is_file():
        raise CorpusError(f"{path} is not a facerig corpus (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:   # manifests are written atomically: a damaged
        # one was cut or changed outside facerig; its settings are needed to trust the shards again
        raise CorpusError(f"{mpath} is damaged ({exc}); the shards cannot be trusted without it: render it again "
                          "into a new folder (the same command and seed give the same images)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CorpusError(f"{mpath} is not a {FORMAT_NAME} manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise CorpusError(f"{path}: corpus format v{manifest.get('format_version')} is newer than this "
                          f"facerig (v{FORMAT_VERSION}); upgrade facerig")
    for key in ("layout_version", "layout", "image_size", "shard_size", "shards", "counts", "keys"):
        if key not in manifest:
            raise CorpusError(f"{mpath} lacks {key!r}")
    return manifest


def _parse_keys(manifest: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    try:
        return {k: (str(v["dtype"]), tuple(int(x) for x in v["shape"])) for k, v in manifest["keys"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorpusError(f"malformed 'keys' in manifest: {exc}") from None


class Corpus:
    """A validated, read-only view of a corpus directory (see :func:`open_corpus`)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        try:
            self.layout = ParamLayout.from_dict(manifest["layout"])
        except LayoutError as exc:
            raise CorpusError(f"{path}: {exc}") from None
        if self.layout.version != int(manifest["layout_version"]):
            raise CorpusError(f"{path}: layout_version {manifest['layout_version']} disagrees with the "
                              f"layout ({self.layout.version})")
        self.image_size = int(manifest["image_size"])
        self.shard_size = int(manifest["shard_size"])
        self.keys = _parse_keys(manifest)
        required = key_specs(self.image_size, self.layout)
        for k, spec in required.items():
            if self.keys.get(k) != spec:
                raise CorpusError(f"{path}: manifest declares {k!r} as {self.keys.get(k)}, expected {spec}")
        self.shards = sorted((ShardInfo.from_dict(d) for d in manifest["shards"]), key=lambda s: s.index)
        if len({s.index for s in self.shards}) != len(self.shards):
            raise CorpusError(f"{path}: manifest lists a shard twice")
        total = sum(s.count for s in self.shards)
        if int(manifest["counts"].get("images", -1)) != total:
            raise CorpusError(f"{path}: manifest counts {manifest['counts'].get('images')} images but its "
                              f"shards hold {total}")

    # -- sizes ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / s.name for s in self.shards]

    @property
    def generator(self) -> dict[str, Any]:
        return dict(self.manifest.get("generator", {}))

    @property
    def complete(self) -> bool:
        """All requested images are present (a resumed/extended run may still be missing some)."""
        requested = int(self.manifest["counts"].get("requested", len(self)))
        return len(self) >= requested

    # -- reading ----------------------------------------------------------------------------
    def load_shard(self, i: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of the ``i``-th listed shard, after checking its size and sha256."""
        info = self.shards[i]
        path = self.path / info.name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorpusError(f"{path}: shard listed in the manifest is missing; rerun the same "
                              "`facerig synth render` command to re-create it") from None
        if len(data) != info.bytes:
            what = f"truncated or extended: {len(data)} bytes, manifest says {info.bytes}"
        elif hashlib.sha256(data).hexdigest() != info.sha256:
            what = "sha256 differs from the manifest"
        else:
            what = ""
        if what:
            raise CorpusError(f"{path}: checksum mismatch ({what}); the shard is corrupt — rerun the same "
                              "`facerig synth render` command to re-render it")
        wanted = list(self.keys) if keys is None else list(keys)
        unknown = [k for k in wanted if k not in self.keys]
        if unknown:
            raise CorpusError(f"corpus has no arrays {unknown} (it has {sorted(self.keys)})")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                out = {k: npz[k] for k in wanted}
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise CorpusError(f"{path}: unreadable shard ({exc})") from None
        n = info.count
        for k, a in out.items():
            dtype, shape = self.keys[k]
            if a.dtype != np.dtype(dtype) or a.shape != (n,) + shape:
                raise CorpusError(f"{path}: array {k!r} is {a.dtype}{list(a.shape)}, manifest says "
                                  f"{dtype}{[n, *shape]}")
        return out

    def iter_shards(self, keys: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self.shards)):
            yield self.load_shard(i, keys)

    def load_all(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """All shards concatenated (preallocated, so peak memory is the result plus one shard)."""
        wanted = list(self.keys) if keys is None else list(keys)
        n = len(self)
        out = {k: np.empty((n,) + self.keys[k][1], np.dtype(self.keys[k][0])) for k in wanted
               if k in self.keys}
        start = 0
        for i in range(len(self.shards)):
            part = self.load_shard(i, wanted)
            m = self.shards[i].count
            for k in wanted:
                out[k][start:start + m] = part[k]
            start += m
        return out

    def verify(self) -> None:
        """Check every shard's size and checksum (reads the whole corpus)."""
        for info in self.shards:
            path = self.path / info.name
            if not path.is_file():
                raise CorpusError(f"{path}: shard listed in the manifest is missing")
            if path.stat().st_size != info.bytes or sha256_file(path) != info.sha256:
                raise CorpusError(f"{path}: checksum mismatch; the shard is corrupt or truncated — rerun the "
                                  "same `facerig synth render` command to re-render it")

    def __repr__(self) -> str:
        return f"Corpus({str(self.path)!r}, images={len(self)}, size={self.image_size}, shards={len(self.shards)})"


def open_corpus(path: Path | str, verify: bool = False) -> Corpus:
    """Open and validate a corpus directory; ``verify`` also checks every shard's sha256 now.

    Without ``verify`` each shard is still checked when it is loaded; here only presence and
    byte sizes are checked (cheap), so a truncated shard is reported before training starts.
    """
    p = Path(path)
    corpus = Corpus(p, _read_manifest(p))
    for info in corpus.shards:
        sp = p / info.name
        if not sp.is_file():
            raise CorpusError(f"{sp}: shard listed in the manifest is missing; rerun the same "
                              "`facerig synth render` command to re-create it")
        if sp.stat().st_size != info.bytes:
            raise CorpusError(f"{sp}: checksum mismatch (size {sp.stat().st_size} bytes, manifest says "
                              f"{info.bytes}); the shard is truncated or corrupt — rerun the same "
                              "`facerig synth render` command to re-render it")
    if verify:
        corpus.verify()
    if not corpus.complete:
        log.warning("corpus %s is incomplete: %d of %s requested images", p, len(corpus),
                    corpus.manifest["counts"].get("requested"))
    return corpus


class CorpusWriter:
    """Creates a corpus or reopens one to resume/extend it; the only code that edits a manifest.

    ``settings`` are the generator settings that determine shard content (seed, size, priors,
    augmentation …). Reopening with different settings is refused: appending images made
    differently to an existing corpus would silently mix two distributions.
    One writer per directory at a time (an advisory ``.lock`` file enforces it).
    """

    def __init__(self, path: Path | str, image_size: int, layout: ParamLayout, shard_size: int,
                 settings: Mapping[str, Any], extra_keys: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
                 verify_existing: bool = True, software: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise CorpusError(f"output {self.path} exists and is a file, not a directory")
        if image_size < 1 or shard_size < 1:
            raise CorpusError("image_size and shard_size must be positive")
        self.image_size, self.layout, self.shard_size = int(image_size), layout, int(shard_size)
        self.settings = json.loads(json.dumps(dict(settings)))  # plain JSON types, comparable
        self.extra_keys = {k: (str(d), tuple(int(x) for x in s)) for k, (d, s) in (extra_keys or {}).items()}
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fh = self._acquire_lock()
        self._shards: dict[int, ShardInfo] = {}
        self.manifest: dict[str, Any] = {}
        if (self.path / MANIFEST).exists():
            self._reopen(verify_existing)
        else:
            self._check_empty()
            self.manifest = self._new_manifest()
            self._flush()
        if software:  # informative only (not compared on resume): who wrote the shards
            self.manifest["software"] = json.loads(json.dumps(dict(software)))
            self._flush()
        self._clean_stray_files()

    # -- lifecycle ---------------------------------------------------------------------------
    def _acquire_lock(self) -> Any:
        return acquire_lock(self.path, ".lock", str(self.path), CorpusError)

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> "CorpusWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_empty(self) -> None:
        others = [p.name for p in self.path.iterdir()
                  if p.name != ".lock" and not SHARD_PATTERN.match(p.name) and not is_temp_name(p.name)]
        if others:
            raise CorpusError(f"output directory {self.path} is not empty and holds no corpus "
                              f"(found {sorted(others)[:3]}); choose a new or empty directory")

    def _new_manifest(self) -> dict[str, Any]:
        specs = dict(key_specs(self.image_size, self.layout))
        specs.update(self.extra_keys)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "layout_version": LAYOUT_VERSION,
                "layout": self.layout.to_dict(), "image_size": self.image_size, "shard_size": self.shard_size,
                "keys": {k: {"dtype": d, "shape": list(s)} for k, (d, s) in specs.items()},
                "generator": self.settings, "counts": {"images": 0, "shards": 0, "requested": 0},
                "created": now, "updated": now, "shards": []}

    def _reopen(self, verify: bool) -> None:
        old = Corpus(self.path, _read_manifest(self.path))
        theirs = old.manifest
        mismatch = []
        if old.image_size != self.image_size:
            mismatch.append(f"image_size {old.image_size} ≠ {self.image_size}")
        if old.layout != self.layout:
            mismatch.append(f"layout {old.layout} ≠ {self.layout}")
        if old.shard_size != self.shard_size:
            mismatch.append(f"shard_size {old.shard_size} ≠ {self.shard_size}")
        gen = theirs.get("generator", {})
        for k in sorted(set(gen) | set(self.settings)):
            if gen.get(k) != self.settings.get(k):
                mismatch.append(f"{k}: {gen.get(k)!r} ≠ {self.settings.get(k)!r}")
        if mismatch:
            raise CorpusError(f"{self.path} holds a corpus made with different settings ("
                              + "; ".join(mismatch[:4]) + "); use a new output directory or the same arguments")
        self.manifest = copy.deepcopy(theirs)
        for info in old.shards:
            p = self.path / info.name
            ok = p.is_file() and p.stat().st_size == info.bytes and (not verify or sha256_file(p) == info.sha256)
            if ok:
                self._shards[info.index] = info
            else:
                log.warning("%s is missing or fails its checksum; it will be re-rendered", p)
        if len(self._shards) != len(old.shards):
            self._flush()

    def _clean_stray_files(self) -> None:
        """Remove ``*.part`` leftovers and shard files a killed run never entered in the manifest."""
        for p in self.path.iterdir():
            m = SHARD_PATTERN.match(p.name)
            if is_temp_name(p.name) or (m and int(m.group(1)) not in self._shards):
                log.info("removing unfinished %s", p.name)
                with contextlib.suppress(OSError):
                    p.unlink()

    # -- writing -----------------------------------------------------------------------------
    @property
    def done(self) -> dict[int, ShardInfo]:
        """Shards already in the manifest, by index."""
        return dict(self._shards)

    def set_requested(self, n_images: int) -> None:
        """Record how many images the current run aims for (the corpus only ever grows)."""
        counts = self.manifest["counts"]
        counts["requested"] = max(int(counts.get("requested", 0)), int(n_images))
        self._flush()

    def write_shard(self, index: int, arrays: Mapping[str, np.ndarray]) -> ShardInfo:
        """Validate, write and record a shard in one go (single-process use)."""
        validate_arrays(arrays, self.image_size, self.layout, self.extra_keys)
        info = write_shard_file(self.path, index, arrays)
        self.add_shard(info)
        return info

    def add_shard(self, info: ShardInfo) -> None:
        """Record a shard file (written by :func:`write_shard_file`, possibly in a worker)."""
        p = self.path / info.name
        if not p.is_file() or p.stat().st_size != info.bytes:
            raise CorpusError(f"{p}: shard file is missing or has the wrong size; not recording it")
        if info.index in self._shards and self._shards[info.index] != info:
            raise CorpusError(f"shard {info.index} is already in the manifest with different content")
        self._shards[info.index] = info
        self._flush()

    def drop_shard(self, index: int) -> None:
        """Forget a shard (used when a partial tail shard must be re-rendered to extend a corpus)."""
        if self._shards.pop(index, None) is not None:
            self._flush()
            with contextlib.suppress(OSError):
                (self.path / shard_name(index)).unlink()

    def _flush(self) -> None:
        m = self.manifest
        shards = [self._shards[i] for i in sorted(self._shards)]
        m["shards"] = [s.to_dict() for s in shards]
        m["counts"]["images"] = sum(s.count for s in shards)
        m["counts"]["shards"] = len(shards)
        m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_bytes(self.path / MANIFEST, (json.dumps(m, indent=1) + "\n").encode(), clean_stale=False)
