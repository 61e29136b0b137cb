"""Corpus format (no Blender): round trip, atomicity leftovers, checksums, resume rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facemodel import LAYOUT_VERSION, ParamLayout
from synth.corpus import (MANIFEST, CorpusError, CorpusWriter, key_specs, open_corpus, shard_name,
                          write_shard_file)

S = 16
LAYOUT = ParamLayout(n_identity=10)
SETTINGS = {"seed": 1, "engine": "test"}


def arrays(n: int, k: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(k)
    return {"images": rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8),
            "params": rng.random((n, LAYOUT.size), dtype=np.float32),
            "landmarks": rng.random((n, 68, 2), dtype=np.float32) * S,
            "landmarks_visible_jaw": rng.random((n, 68, 2), dtype=np.float32) * S,
            "visibility": rng.random((n, 68)) < 0.8, "masks": rng.integers(0, 2, (n, S, S), dtype=np.uint8),
            "pose_deg": rng.random((n, 3), dtype=np.float32), "seeds": np.arange(n, dtype=np.int64) + 100 * k}


def make(path, shards=((0, 4), (1, 4), (2, 2)), requested=10):
    with CorpusWriter(path, S, LAYOUT, 4, SETTINGS) as w:
        w.set_requested(requested)
        for k, n in shards:
            w.write_shard(k, arrays(n, k))
    return path


def test_round_trip(tmp_path):
    c = open_corpus(make(tmp_path / "c"), verify=True)
    assert len(c) == 10 and c.image_size == S and c.layout == LAYOUT and c.complete
    assert [p.name for p in c.shard_paths] == [shard_name(k) for k in range(3)]
    shard = c.load_shard(1)
    for key, (dtype, shape) in key_specs(S, LAYOUT).items():
        assert shard[key].dtype == np.dtype(dtype) and shard[key].shape == (4,) + shape
        np.testing.assert_array_equal(shard[key], arrays(4, 1)[key])
    allv = c.load_all(["seeds", "images"])
    assert allv["seeds"].tolist() == [0, 1, 2, 3, 100, 101, 102, 103, 200, 201]
    m = json.loads((tmp_path / "c" / MANIFEST).read_text())
    assert m["layout_version"] == LAYOUT_VERSION and m["counts"] == {"images": 10, "shards": 3, "requested": 10}
    assert m["generator"] == SETTINGS and len(m["shards"][0]["sha256"]) == 64
    with np.load(c.shard_paths[0], allow_pickle=False) as npz:  # plain np.savez, no pickles
        assert set(npz.files) == set(key_specs(S, LAYOUT))


def test_out_of_order_and_incomplete(tmp_path):
    c = open_corpus(make(tmp_path / "c", shards=((2, 2), (0, 4)), requested=10))
    assert len(c) == 6 and not c.complete
    assert [s.index for s in c.shards] == [0, 2]


def test_corrupt_shard_detected(tmp_path):
    path = make(tmp_path / "c")
    shard = path / shard_name(1)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    c = open_corpus(path)  # same size: only the checksum can tell
    c.load_shard(0)
    with pytest.raises(CorpusError, match="shard-00001.npz: checksum mismatch"):
        c.load_shard(1)
    with pytest.raises(CorpusError, match="checksum mismatch"):
        open_corpus(path, verify=True)


def test_truncated_and_missing_shard(tmp_path):
    path = make(tmp_path / "c")
    shard = path / shard_name(2)
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorpusError, match="shard-00002.npz: checksum mismatch.*truncated"):
        open_corpus(path)
    shard.unlink()
    with pytest.raises(CorpusError, match="missing"):
        open_corpus(path)


def test_reopen_drops_bad_shards_and_cleans_leftovers(tmp_path):
    path = make(tmp_path / "c")
    (path / shard_name(0)).write_bytes(b"garbage")             # corrupt listed shard
    (path / "shard-00007.npz").write_bytes(b"unlisted")       # killed after rename, before manifest
    (path / "shard-00003.npz.123.part").write_bytes(b"half")  # killed mid-write
    with CorpusWriter(path, S, LAYOUT, 4, SETTINGS) as w:
        assert sorted(w.done) == [1, 2]
        w.write_shard(0, arrays(4, 0))
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) == [
        MANIFEST, shard_name(0), shard_name(1), shard_name(2)]
    open_corpus(path, verify=True)


def test_reopen_with_other_settings_refused(tmp_path):
    path = make(tmp_path / "c")
    with pytest.raises(CorpusError, match="different settings.*seed"):
        CorpusWriter(path, S, LAYOUT, 4, {**SETTINGS, "seed": 2})
    with pytest.raises(CorpusError, match="different settings.*image_size"):
        CorpusWriter(path, 32, LAYOUT, 4, SETTINGS)


def test_one_writer_at_a_time(tmp_path):
    with CorpusWriter(tmp_path / "c", S, LAYOUT, 4, SETTINGS):
        with pytest.raises(CorpusError, match="another process"):
            CorpusWriter(tmp_path / "c", S, LAYOUT, 4, SETTINGS)


def test_bad_arrays_rejected(tmp_path):
    with CorpusWriter(tmp_path / "c", S, LAYOUT, 4, SETTINGS) as w:
        bad = arrays(2, 0)
        bad["images"] = bad["images"].astype(np.float32)
        with pytest.raises(CorpusError, match="'images' is float32"):
            w.write_shard(0, bad)
        bad = arrays(2, 0)
        del bad["masks"]
        with pytest.raises(CorpusError, match="lack"):
            w.write_shard(0, bad)


def test_not_a_corpus(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        open_corpus(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CorpusError, match="file"):
        open_corpus(tmp_path / "file")
    with pytest.raises(CorpusError, match="no manifest.json"):
        open_corpus(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(CorpusError, match="not empty"):
        CorpusWriter(tmp_path / "junk", S, LAYOUT, 4, SETTINGS)


def test_worker_written_shard_recorded(tmp_path):
    with CorpusWriter(tmp_path / "c", S, LAYOUT, 4, SETTINGS) as w:
        info = write_shard_file(tmp_path / "c", 0, arrays(3, 0))
        assert not list((tmp_path / "c").glob("*.part"))
        w.add_shard(info)
    assert len(open_corpus(tmp_path / "c", verify=True)) == 3
