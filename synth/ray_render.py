"""Corpus shards rendered on a Ray cluster (``facerig synth render/views --ray auto|ADDRESS``).

The driver (the ``facerig`` process) stays what it is for local rendering: the only writer of the
corpus folder (:class:`synth.corpus.CorpusWriter`, its lock and manifest). Ray only replaces the
worker processes: one actor per CPU of the cluster, each holding a Blender scene
(:class:`synth.shards.ShardRenderer`), renders whole shards — ``shard k`` is a pure function of the
settings and k — and returns the arrays to the driver, which writes them with the same
:func:`synth.corpus.write_shard_file` as a local worker. Hence:

* **same bytes**: a corpus rendered on Ray has the manifest entries and shard sha256 of the local one;
* **no shared filesystem needed**: only the driver touches the output folder. What the actors need
  from the driver's disk — the face model, the ``--backgrounds`` photos, the reconstructions of
  ``synth views`` — is put into Ray's object store once and unpacked on each actor's node;
* **resume**: a killed driver loses at most the shards in flight (Ray ends the actors it owned), and the
  same command renders the missing ones; a lost actor (process or node) has its shards re-submitted to
  the others, with a replacement actor started, up to :data:`MAX_LOST_ACTORS` losses per run.

Every node needs the same facerig installation (``pip install 'facerig[cluster]'``, one Python 3.11
environment per node, as Ray requires); the Ray version is pinned (``ray==2.60.0``). Throughput per
actor equals a local worker's: see docs/scaling.md.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from .corpus import CorpusWriter, write_shard_file
from .shards import RenderError, RenderSettings, ShardFeeder, make_renderer
from .workers import THREAD_ENV

log = logging.getLogger(__name__)
MAX_LOST_ACTORS = 8          # actors lost (and replaced) in one run before it gives up
STALL_TIMEOUT_S = 1800.0     # no shard finished for this long: the cluster cannot run the actors
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Cluster:
    """A Ray connection: ``started`` when this process started (and will stop) a local instance."""

    address: str
    started: bool
    owned: bool   # ray.init was called here (shut down on close)

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()
            self.owned = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RenderError("--ray needs Ray: pip install 'facerig[cluster]' (ray==2.60.0)") from None
    return ray


def _reachable(address: str) -> None:
    """Refuse an address nothing listens on, in seconds (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].rpartition(":")
    if not host or not port.isdigit():
        raise RenderError(f"--ray {address!r}: give auto or the head node's HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RenderError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start its head with "
                          "`ray start --head` or check the address") from None


def connect(address: str, num_cpus: int | None = None) -> Cluster:
    """Join the cluster at ``address``; ``auto``: ``$RAY_ADDRESS`` when set, else start a local Ray
    instance with ``num_cpus`` CPUs (all cores when None). An already initialised Ray is used as is."""
    ray = _import_ray()
    if ray.is_initialized():
        return Cluster(address="(initialised)", started=False, owned=False)
    target = os.environ.get("RAY_ADDRESS") if address == "auto" else address
    env = {"env_vars": dict(THREAD_ENV)}   # one actor per CPU: BLAS and llvmpipe single-threaded
    if target:
        _reachable(target)
        try:
            ray.init(address=target, runtime_env=env, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RenderError(f"cannot join the Ray cluster at {target}: {str(exc).splitlines()[0][:200]}") from None
        log.info("joined the Ray cluster at %s: %s CPUs", target, ray.cluster_resources().get("CPU"))
        return Cluster(address=target, started=False, owned=True)
    # Ray protects a local instance with a token it would otherwise write to ~/.ray/auth_token: one made
    # here lives in this process's environment only (inherited by the instance it starts).
    import secrets

    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    ray.init(num_cpus=num_cpus, runtime_env=env, log_to_driver=False, include_dashboard=False,
             logging_level=logging.WARNING)
    log.info("started a local Ray instance with %s CPUs", ray.cluster_resources().get("CPU"))
    return Cluster(address="local", started=True, owned=True)


def _bundle(settings: RenderSettings, photos: list[Path]) -> dict[str, bytes]:
    """The driver-side files the actors read, by name (relative paths keep the photos' order)."""
    files = {"model.npz": Path(settings.model_path).read_bytes()}
    if settings.backgrounds is not None:
        root = Path(settings.backgrounds)
        for p in photos:
            files[f"backgrounds/{p.relative_to(root).as_posix()}"] = p.read_bytes()
    if settings.views is not None:
        for name in ("manifest.json", "recon.npz"):
            files[f"views/{name}"] = (Path(settings.views.source) / name).read_bytes()
    return files


def _materialise(settings: RenderSettings, files: dict[str, bytes], root: Path) -> RenderSettings:
    """``settings`` pointing at copies of the bundled files under ``root`` (on the actor's node)."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    changes: dict[str, Any] = {"model_path": root / "model.npz"}
    if settings.backgrounds is not None:
        changes["backgrounds"] = root / "backgrounds"
    if settings.views is not None:
        changes["views"] = replace(settings.views, source=root / "views")
    return replace(settings, **changes)


class ShardWorker:
    """A Ray actor: one Blender scene rendering whole shards (the local worker process's job)."""

    def __init__(self, settings: RenderSettings, files: dict[str, bytes]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="facerig-ray-"))
        self.settings = _materialise(settings, files, self.root)
        self.renderer = make_renderer(self.settings, scratch_parent=self.root)

    def ready(self) -> int:
        return os.getpid()

    def render(self, k: int) -> tuple[int, dict[str, Any]]:
        return k, self.renderer.render_shard(k)


def render_on_ray(cluster: Cluster, settings: RenderSettings, photos: list[Path], writer: CorpusWriter,
                  shards: Iterator[int], n_todo: int, progress: bool = True,
                  startup_timeout: float = 600.0) -> tuple[int, float]:
    """Render the pending ``shards`` on the cluster and record them with ``writer``; (images, seconds)."""
    import ray
    from tqdm import tqdm

    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        raise RenderError(f"the Ray cluster at {cluster.address} has no CPUs to render on")
    remote = ray.remote(num_cpus=1)(ShardWorker)
    files = ray.put(_bundle(settings, photos))
    feeder = ShardFeeder(shards, depth=2 * cpus)
    retry: list[int] = []
    first = feeder.take()
    n_actors = min(cpus, len(first))
    actors = [remote.remote(settings, files) for _ in range(n_actors)]
    load = {a: 0 for a in actors}
    pending: dict[Any, tuple[int, Any]] = {}
    lost = 0

    def submit(k: int) -> None:
        actor = min(load, key=load.get)   # the least busy actor
        load[actor] += 1
        pending[actor.render.remote(k)] = (k, actor)

    def replace_actor(actor: Any, why: str) -> None:
        nonlocal lost
        lost += 1
        load.pop(actor, None)
        if lost > MAX_LOST_ACTORS:
            raise RenderError(f"{lost} Ray render actors lost ({why}); finished shards are kept — rerun the "
                              "same command to resume")
        log.warning("a Ray render actor was lost (%s); its shards go to the others and a replacement starts", why)
        load[remote.remote(settings, files)] = 0

    try:
        ray.get([a.ready.remote() for a in actors], timeout=startup_timeout)
    except ray.exceptions.GetTimeoutError:
        raise RenderError(f"Ray render actors did not start within {startup_timeout:.0f} s (is the cluster "
                          "short of CPUs?)") from None
    except ray.exceptions.RayError as exc:
        raise RenderError(f"Ray render actors failed to start: {str(exc).strip().splitlines()[-1][:300]}") from None
    bar = tqdm(total=n_todo, unit="img", desc="render (ray)", disable=not progress, smoothing=0.1)
    rendered, t_start, last_done = 0, time.perf_counter(), time.perf_counter()
    for k in first:
        submit(k)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=10.0)
            if not done:
                if time.perf_counter() - last_done > STALL_TIMEOUT_S:
                    raise RenderError(f"no shard finished on the Ray cluster in {STALL_TIMEOUT_S:.0f} s; finished "
                                      "shards are kept — rerun the same command to resume")
                continue
            ref = done[0]
            k, actor = pending.pop(ref)
            try:
                _, arrays = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:   # the renderer itself failed: a bug or bad input
                raise RenderError(f"a Ray render task failed on shard {k}; finished shards are kept — rerun "
                                  f"the same command to resume.\n{exc}") from None
            except ray.exceptions.RayError as exc:       # the actor's process or node is gone
                if actor in load:
                    replace_actor(actor, type(exc).__name__)
                retry.append(k)
            else:
                load[actor] = max(0, load.get(actor, 1) - 1)
                writer.add_shard(write_shard_file(writer.path, k, arrays))
                feeder.finished(k)
                n = len(settings.shard_range(k))
                rendered += n
                bar.update(n)
                last_done = time.perf_counter()
            while retry:
                submit(retry.pop())
            for k_next in feeder.take():
                submit(k_next)
    finally:
        bar.close()
        for a in list(load):
            ray.kill(a)
    return rendered, time.perf_counter() - t_start


__all__ = ["connect", "render_on_ray", "Cluster", "ShardWorker"]
