"""Writing files safely: one atomic-write path, output checks before the work, folder locks.

Every file facerig writes goes through this module, so that

* a reader (or the user's previous result) sees the old file or the new one, never half of one:
  the data goes to a hidden temporary file in the same folder, is fsynced and renamed over the
  target (:func:`atomic_output`; several files that belong together, such as a .gltf with its .bin
  and textures, are staged in a hidden folder and renamed into place, the main file last:
  :func:`staged_output`);
* a failed write (full disk, no permission, read-only file system, a folder where the file
  should be …) leaves no temporary file behind and ends in one line that names the path
  (:class:`OutputError`);
* an output that cannot be written is found *before* minutes of work (:func:`check_output_file`,
  :func:`check_output_dir`), and an existing file is only replaced when the user asked for it;
* two runs never append to one folder at once (:func:`folder_lock`).

A process killed with SIGKILL cannot remove its temporary file; the next write of the same target
removes temporaries whose process is gone (:func:`_remove_stale`). Pure standard library, so the
add-on (which vendors facemodel) and every package use the same code.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any, Iterator

log = logging.getLogger(__name__)

TEMP_MARK = ".part"   # temporaries are ``.<name>.<pid>.part<suffix>``: hidden, the writer's pid, the real suffix
_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.part(?:\.[^.]*)?$")

# errno → what the user is told (the path is always named beside it).
_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EEXIST: "it exists",
    errno.ENOENT: "its folder does not exist",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "an input/output error (a failing disk or a removed drive?)",
}
WRITE_ERRNOS = frozenset(_REASONS)


class OutputError(OSError):
    """An output cannot be written: one line that names the path and the reason (exit code 2)."""

    def __str__(self) -> str:   # OSError would prefix "[Errno n]"; the message is already complete
        return str(self.args[0]) if self.args else "output error"


def describe_os_error(exc: OSError, path: Path | str | None = None, action: str = "cannot write") -> str:
    """``cannot write PATH: the disk is full`` for an OSError of writing (``action`` empty: ``PATH: …``)."""
    where = path if path is not None else (exc.filename or "the output")
    reason = _REASONS.get(exc.errno or -1) or (exc.strerror or str(exc)).lower()
    return f"{action} {where}: {reason}" if action else f"{where}: {reason}"


def output_error(exc: OSError, path: Path | str | None = None, action: str = "cannot write") -> OutputError:
    """:class:`OutputError` for ``exc`` (kept as the cause), with its errno."""
    if isinstance(exc, OutputError):
        return exc
    err = OutputError(describe_os_error(exc, path, action))
    err.errno = exc.errno
    err.filename = str(path) if path is not None else exc.filename
    return err


@contextlib.contextmanager
def write_errors(path: Path | str, action: str = "cannot write") -> Iterator[None]:
    """Inside the block an OSError becomes an :class:`OutputError` naming ``path``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(exc, path, action) from exc


# -- checks before the work ------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def _writable_folder(folder: Path, target: Path, what: str) -> None:
    """``folder`` exists: it must be a folder we may create entries in."""
    if not folder.is_dir():
        raise OutputError(f"cannot write {what} {target}: {folder} is a file, not a folder")
    if os.access(folder, os.W_OK | os.X_OK):
        return
    read_only = False
    with contextlib.suppress(OSError, AttributeError):   # no statvfs on Windows
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    if read_only:
        raise OutputError(f"cannot write {what} {target}: the file system of {folder} is read-only")
    raise OutputError(f"cannot write {what} {target}: permission denied in {folder}")


def check_output_file(path: Path | str, overwrite: bool = False, what: str = "output",
                      overwrite_hint: str = "--overwrite") -> Path:
    """Refuse, before any work, an output file that could not be written or would replace a file
    the user did not ask to replace. Creates nothing (missing folders are made when writing)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {what} {path}: it is a folder; give a file name")
    if os.path.lexists(path):
        if not path.is_file():
            raise OutputError(f"cannot write {what} {path}: it exists and is not a regular file")
        if not overwrite:
            hint = f" (use {overwrite_hint} to replace it)" if overwrite_hint else ""
            raise OutputError(f"{what} {path} exists; not replacing it{hint}")
    _writable_folder(_nearest_existing(path.parent), path, what)
    return path


def check_output_dir(path: Path | str, what: str = "output folder") -> Path:
    """Refuse, before any work, an output folder that is a file or lies where nothing can be created."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"cannot write {what} {path}: it is a file, not a folder")
    _writable_folder(path if path.is_dir() else _nearest_existing(path.parent), path, what)
    return path


def make_dirs(path: Path | str) -> Path:
    """``mkdir -p`` with a one-line :class:`OutputError`."""
    path = Path(path)
    with write_errors(path, "cannot create the folder"):
        path.mkdir(parents=True, exist_ok=True)
    return path


# -- atomic writes ---------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX: the directory entry must be flushed too)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path, keep_suffix: bool = True) -> Path:
    """The hidden temporary beside ``path``; with ``keep_suffix`` it ends in the real suffix, because
    writers that pick the format by extension (savefig, np.savez, Blender's exporters) look at it."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_MARK}{path.suffix if keep_suffix else ''}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of this module's temporaries (or an older ``*.part`` one)."""
    return bool(_STALE.match(name)) or name.endswith(TEMP_MARK)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this process counts as alive; on Windows every pid does)."""
    if pid == os.getpid() or os.name == "nt":   # Windows: os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True   # exists, another user's
    return True


def _remove_stale(path: Path) -> None:
    """Remove temporaries of ``path`` left by writers that were killed (their process is gone)."""
    with contextlib.suppress(OSError):
        for p in path.parent.iterdir():
            m = _STALE.match(p.name)
            if m and m.group("name") == path.name and not pid_alive(int(m.group("pid"))):
                log.info("removing %s, left by a killed writer", p)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def _remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _keep_mode(tmp: Path, final: Path) -> None:
    """A replaced file keeps its permissions (a temporary from mkstemp-like code may be 0600)."""
    with contextlib.suppress(OSError):
        os.chmod(tmp, final.stat().st_mode & 0o7777)


@contextlib.contextmanager
def atomic_output(path: Path | str, keep_suffix: bool = True, clean_stale: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; when the block ends normally the file written
    there is fsynced and renamed to ``path``. On any failure (an exception, Ctrl-C) the temporary is
    removed and ``path`` keeps its old content; OSErrors become :class:`OutputError`. ``clean_stale``
    removes killed writers' temporaries of ``path`` first (a folder scan: writers of many files in one
    folder, such as the corpus, clean once at their start instead)."""
    path = Path(path)
    make_dirs(path.parent)
    if clean_stale:
        _remove_stale(path)
    tmp = temp_name(path, keep_suffix)
    try:
        with write_errors(path):
            yield tmp
            if not tmp.is_file():
                raise OutputError(f"cannot write {path}: the writer produced no file")
            _fsync_file(tmp)
            if path.is_file():
                _keep_mode(tmp, path)
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb", clean_stale: bool = True, **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that replaces ``path`` atomically when the block ends (see :func:`atomic_output`)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole file; mode {mode!r} is not a write mode")
    with atomic_output(path, keep_suffix=False, clean_stale=clean_stale) as tmp:
        with write_errors(path), open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()


def atomic_write_bytes(path: Path | str, data: bytes, clean_stale: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a partial one."""
    with atomic_open(path, "wb", clean_stale) as fh:
        fh.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_text(obj: Any, indent: int | None = 1, **kwargs: Any) -> str:
    """JSON that is valid JSON: a NaN or an infinity (``NaN``/``Infinity`` tokens, which JSON does not
    have) is an error naming the key, not a file other programs cannot read."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False, **kwargs)
    except ValueError:
        bad = _first_non_finite(obj)
        raise ValueError(f"the result holds a non-finite number{f' at {bad}' if bad else ''} "
                         "(a damaged model or input?); nothing written") from None


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN/infinity replaced by None (JSON null): for reports in which a non-finite
    number means "not measured" rather than a broken result."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def _first_non_finite(obj: Any, where: str = "") -> str:
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "the top level"
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return ""
    for k, v in items:
        found = _first_non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return ""


def write_json(path: Path | str, obj: Any, indent: int | None = 1, **kwargs: Any) -> Path:
    """Atomically write ``obj`` as strict JSON (no NaN/Infinity) with a trailing newline."""
    atomic_write_text(path, json_text(obj, indent, **kwargs) + "\n")
    return Path(path)


@contextlib.contextmanager
def staged_output(path: Path | str) -> Iterator[Path]:
    """For writers that make several files beside the main one (a .gltf's .bin and textures, an
    .obj's .mtl and texture folder): yield ``path``'s name inside a hidden staging folder beside it;
    after the block every staged file is fsynced and renamed into ``path``'s folder at the same
    relative place, the main file last, and the staging folder removed. On failure nothing is moved
    and the staging folder is removed, so the user's previous files stay as they were."""
    path = Path(path)
    make_dirs(path.parent)
    _remove_stale(path)
    stage = path.with_name(f".{path.name}.{os.getpid()}{TEMP_MARK}")
    try:
        with write_errors(path):
            _remove(stage)
            stage.mkdir()
            yield stage / path.name
            main = stage / path.name
            if not main.is_file():
                raise OutputError(f"cannot write {path}: the writer produced no file")
            files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: p == main)
            for f in files:
                _fsync_file(f)
            for f in files:
                target = path.parent / f.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_file():
                    _keep_mode(f, target)
                os.replace(f, target)
    finally:
        _remove(stage)
    _fsync_dir(path.parent)


# -- locks -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def folder_lock(folder: Path | str, name: str = ".lock", what: str = "",
                error: type[Exception] = OutputError) -> Iterator[None]:
    """Hold an advisory lock (``flock`` on ``folder/name``) for the block; a second process asking
    for the same lock is refused at once with an :class:`OutputError`, not made to wait.

    The folder is created. The lock file stays (removing it would let a third process lock a new
    file while a second still holds the old one); the kernel releases the lock when the process
    ends, however it ends, so a killed run never leaves the folder locked.
    """
    fh = acquire_lock(folder, name, what, error)
    try:
        yield
    finally:
        fh.close()


def acquire_lock(folder: Path | str, name: str = ".lock", what: str = "",
                 error: type[Exception] = OutputError) -> IO[Any]:
    """:func:`folder_lock` for holders that release it themselves: returns the open lock file, whose
    ``close()`` releases the lock; ``error`` is the class of the refusal (a package's own user error)."""
    folder = make_dirs(folder)
    with write_errors(folder / name):
        fh = open(folder / name, "a+")
    try:
        import fcntl
    except ImportError:   # pragma: no cover - Windows (the add-on): no advisory locks, no refusal
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise error(f"{what or folder} is being written by another process; wait for it to finish "
                    "(or stop it) and run again") from None
    return fh


__all__ = ["OutputError", "WRITE_ERRNOS", "acquire_lock", "atomic_open", "atomic_output", "atomic_write_bytes",
           "atomic_write_text", "check_output_dir", "check_output_file", "describe_os_error", "finite_or_none",
           "folder_lock", "is_temp_name", "json_text", "make_dirs", "output_error", "pid_alive", "staged_output", "temp_name", "write_errors", "write_json"]
