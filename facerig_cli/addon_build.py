"""``facerig addon build``: one installable Blender extension zip per desktop platform.

Each zip holds the add-on, the vendored ``facemodel`` and ``runtime`` packages, the ONNX models and the
wheels of exactly the distributions the add-on imports at run time (found by importing the photo runtime
in a subprocess), downloaded for that platform and Blender's Python by ``pip download``. Blender
unpacks the wheels itself; it never resolves their dependencies, so the zip may leave out what
MediaPipe declares but the add-on never imports (``runtime/mediapipe_solutions.py``) and may
take OpenCV from the headless wheel. The zips are reproducible: sorted entries, fixed times and
permissions. blender_addon/README.md ("Building the extension") gives the reasons, docs/results.md
("The extension zips") the sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facemodel.outputs import atomic_output, check_output_dir, check_output_file

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ADDON_ID = "facerig"


@dataclass(frozen=True)
class PythonTarget:
    """A Python that Blender releases embed, and the Blender versions that embed it ([min, max))."""

    version: str
    blender_min: str
    blender_max: str


# Blender 4.2–5.0 embed Python 3.11; 5.1 and later 3.13 (bpy 5.1.0 on PyPI is cp313 only). MediaPipe
# 0.10.21 — the last release whose legacy face solutions ship their models — has no cp313 wheel, so the
# zips stop at Blender 5.1 (blender_version_max is exclusive). Add a target here when every pinned
# distribution has wheels for it; Blender picks the wheels of its own Python from the zip.
PYTHONS = (PythonTarget("3.11", "4.2.0", "5.1.0"),)


def _mac_tags(arch: str) -> tuple[str, ...]:
    versions = [f"{major}_0" for major in range(15, 10, -1)] + [f"10_{minor}" for minor in range(15, 8, -1)]
    return tuple(f"macosx_{v}_{arch}" for v in versions) + tuple(f"macosx_{v}_universal2" for v in versions)


# Blender's platform names → wheel platform tags, best first (pip's order of preference).
# Blender 4.2+ on Linux needs glibc 2.28, so manylinux up to 2_28.
PLATFORM_TAGS: dict[str, tuple[str, ...]] = {
    "linux-x64": tuple(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1))
    + ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": _mac_tags("arm64"),
    "macos-x64": _mac_tags("x86_64"),
}

# What Blender's own Python already has (numpy, requests, …), or what never belongs in the zip.
BLENDER_PROVIDES = {"numpy", "requests", "certifi", "idna", "urllib3", "charset-normalizer", "zstandard",
                    "cython", "bpy", "facerig", "pip", "setuptools", "wheel"}
# The development environment has opencv-contrib-python because MediaPipe requires it; the add-on calls
# only core, imgproc, imgcodecs and photo functions (resize, warpAffine, remap, inpaint, GaussianBlur,
# erode/dilate, fillConvexPoly, imdecode, cvtColor), all in the headless main package — 50 instead of
# 69 MB on Linux, no Qt, the same licences (MIT wrapper, Apache-2.0 OpenCV, LGPL FFmpeg).
ZIP_SUBSTITUTES = {"opencv-contrib-python": "opencv-python-headless"}
# onnxruntime stopped publishing Intel-mac wheels after 1.23.2; the shipped models give the same output
# with it as with 1.31.1 (regressors: max difference 1e-6, C-Nets 3e-3; measured 2026-12-05 on Linux).
PLATFORM_VERSIONS = {("macos-x64", "onnxruntime"): "1.23.2"}
ADDON_FILES_EXCLUDE = {"__pycache__"}
VENDORED = ("facemodel", "runtime")   # packages the add-on imports, copied into it

_PROBE = r"""
import json, sys, importlib.metadata as md
import numpy as np
from runtime import pipeline, detect, regressor, photo, texture, same_person  # noqa: F401
from blender_addon import rig  # noqa: F401
import facemodel.convert  # noqa: F401  (the preferences' Download Face Model button)
import onnxruntime  # noqa: F401
detect.detect_faces(np.full((96, 96, 3), 128, np.uint8))
photo.pillow_image()  # Pillow and pillow-heif (GIF/HEIC/AVIF photos), imported on first use
mods = {m.split('.')[0] for m in sys.modules}
dists = md.packages_distributions()
out = {}
for m in sorted(mods):
    for d in dists.get(m, []):
        out[d] = md.version(d)
print(json.dumps(out))
"""


def runtime_distributions() -> dict[str, str]:
    """Distributions the add-on really imports (probed in a subprocess), minus Blender's own, as
    ``{canonical name: version}`` with :data:`ZIP_SUBSTITUTES` applied."""
    from packaging.utils import canonicalize_name

    res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "GLOG_minloglevel": "3"})
    if res.returncode != 0:
        raise RuntimeError(f"could not import the photo runtime to list its wheels:\n{res.stderr[-2000:]}")
    found = json.loads(res.stdout.strip().splitlines()[-1])
    dists = {canonicalize_name(d): v for d, v in found.items()}
    dists = {ZIP_SUBSTITUTES.get(d, d): v for d, v in dists.items() if d not in BLENDER_PROVIDES}
    return dict(sorted(dists.items()))


def supported_tags(python: str, platform: str) -> list:
    """The wheel tags a Blender with ``python`` on ``platform`` accepts, best first."""
    from packaging import tags

    version = tuple(int(x) for x in python.split("."))
    interpreter = f"cp{version[0]}{version[1]}"
    plats = list(PLATFORM_TAGS[platform])
    return (list(tags.cpython_tags(version, abis=[interpreter, "abi3", "none"], platforms=plats))
            + list(tags.compatible_tags(version, interpreter, plats)))


def _best_cached(dist: str, version: str, supported: list, cache: Path) -> Path | None:
    """The cached wheel of ``dist==version`` with the most preferred supported tag, if any."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    rank = {tag: i for i, tag in enumerate(supported)}
    best: tuple[int, Path] | None = None
    for wheel in cache.glob("*.whl"):
        try:
            name, ver, _, wheel_tags = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        if canonicalize_name(name) != dist or str(ver) != version:
            continue
        score = min((rank[t] for t in wheel_tags if t in rank), default=None)
        if score is not None and (best is None or score < best[0]):
            best = (score, wheel)
    return best[1] if best else None


def platform_wheels(dists: dict[str, str], platform: str, python: str, cache: Path) -> list[Path]:
    """One wheel per distribution for ``platform`` and ``python``: the one ``pip download``
    (``--only-binary=:all:``, exact versions, no dependencies) chose, kept in ``cache/<platform>-cpXY``.

    One folder per target, so the choice never depends on what other targets left in the cache (a
    universal2 wheel fetched for arm64 would otherwise stand in for the x86_64 one pip prefers)."""
    cache = cache / f"{platform}-cp{python.replace('.', '')}"
    cache.mkdir(parents=True, exist_ok=True)
    supported = supported_tags(python, platform)
    wanted = {d: PLATFORM_VERSIONS.get((platform, d), v) for d, v in dists.items()}
    missing = {d: v for d, v in wanted.items() if _best_cached(d, v, supported, cache) is None}
    if missing:
        _pip_download(missing, platform, python, cache)
    wheels = []
    for dist, version in wanted.items():
        wheel = _best_cached(dist, version, supported, cache)
        if wheel is None:
            raise RuntimeError(f"no {platform} wheel of {dist}=={version} for Python {python} after pip download")
        wheels.append(wheel)
    return wheels


def _pip_download(dists: dict[str, str], platform: str, python: str, cache: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python, "-d", str(cache), "--disable-pip-version-check", "-q"]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    cmd += [f"{d}=={v}" for d, v in sorted(dists.items())]
    log.info("downloading %d wheel(s) for %s, Python %s: %s", len(dists), platform, python, ", ".join(dists))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pip download failed (offline? wheels must come from PyPI):\n{res.stderr[-2000:]}")


# -- the zip ------------------------------------------------------------------------------------------
ZIP_TIME = (1980, 1, 1, 0, 0, 0)   # the earliest a zip can store: no build time in the archive


@dataclass(frozen=True)
class ZipEntry:
    """One file of the archive: its name and either a source file or the bytes."""

    name: str
    source: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        return self.data if self.data is not None else self.source.read_bytes()  # type: ignore[union-attr]


def write_zip(out: Path, entries: list[ZipEntry]) -> Path:
    """Write ``entries`` reproducibly: sorted names, fixed time, 0644 Unix permissions, wheels stored
    (already compressed), everything else deflated at a fixed level; written atomically
    (:func:`facemodel.outputs.atomic_output`) so a failed build leaves no half zip."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for entry in sorted(entries, key=lambda e: e.name):
            info = zipfile.ZipInfo(entry.name, date_time=ZIP_TIME)
            info.create_system = 3                       # Unix, so the permissions below mean the same everywhere
            info.external_attr = 0o100644 << 16
            stored = entry.name.endswith(".whl")
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            zf.writestr(info, entry.read(), compresslevel=None if stored else 9)
    return out


def addon_entries() -> list[ZipEntry]:
    """The add-on's own files, ``facemodel`` and ``runtime`` (vendored inside the add-on package: extensions must
    not touch sys.path; ``blender_addon/rt.py`` and ``runtime/fm.py`` find them there) and the licence."""
    src = ROOT / "blender_addon"
    entries = []
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir() or set(rel.parts) & ADDON_FILES_EXCLUDE or f.suffix == ".pyc" \
                or rel.as_posix() == "blender_manifest.toml":
            continue
        entries.append(ZipEntry(rel.as_posix(), f))
    for package in VENDORED:
        for f in sorted((ROOT / package).rglob("*.py")):
            entries.append(ZipEntry((package / f.relative_to(ROOT / package)).as_posix(), f))
    entries.append(ZipEntry("LICENSE", ROOT / "LICENSE"))
    return entries


def manifest_text(platform: str, wheels: list[Path]) -> str:
    """``blender_addon/blender_manifest.toml`` with the build's version, platform, Blender range and wheels."""
    text = (ROOT / "blender_addon" / "blender_manifest.toml").read_text()
    text = _set_toml(text, "version", f'"{_project_version()}"')
    text = _set_toml(text, "blender_version_min", f'"{min((p.blender_min for p in PYTHONS), key=_version)}"')
    text = _set_toml(text, "blender_version_max", f'"{max((p.blender_max for p in PYTHONS), key=_version)}"')
    text = _set_toml(text, "platforms", f'["{platform}"]')
    text = _set_toml(text, "wheels", "[\n" + "".join(f'  "./wheels/{w.name}",\n' for w in wheels) + "]")
    tomllib.loads(text)  # still valid TOML
    return text


def zip_name(platform: str) -> str:
    """Blender's own name for a split-platform build: ``facerig-0.1.0-linux_x64.zip``."""
    return f"{ADDON_ID}-{_project_version()}-{platform.replace('-', '_')}.zip"


def build_addon(out: Path, platform: str, cache: Path, dists: dict[str, str] | None = None,
                with_wheels: bool = True) -> Path:
    """The extension zip for one ``platform`` at ``out``; ``dists`` = :func:`runtime_distributions`."""
    wheels: list[Path] = []
    if with_wheels:
        dists = runtime_distributions() if dists is None else dists
        for python in PYTHONS:
            wheels += platform_wheels(dists, platform, python.version, cache)
    wheels = sorted(set(wheels), key=lambda w: w.name)   # abi3/any wheels serve every Python once
    entries = addon_entries() + [ZipEntry(f"wheels/{w.name}", w) for w in wheels]
    entries.append(ZipEntry("blender_manifest.toml", data=manifest_text(platform, wheels).encode()))
    if not (ROOT / "blender_addon" / "models" / "facerig_regressor.onnx").is_file():
        log.warning("no trained regressor at blender_addon/models/facerig_regressor.onnx: the extension "
                    "will need a model path in its preferences")
    return write_zip(out, entries)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _project_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def _set_toml(text: str, key: str, value: str) -> str:
    """Replace a top-level ``key = ...`` (single- or multi-line list) in the manifest text."""
    out, skip, found = [], False, False
    for line in text.splitlines():
        if skip:
            skip = not line.strip().endswith("]")
            continue
        if not found and "=" in line and line.split("=")[0].strip() == key:
            out.append(f"{key} = {value}")
            rhs = line.split("=", 1)[1].strip()
            skip = rhs.startswith("[") and not rhs.endswith("]")
            found = True
            continue
        out.append(line)
    if not found:
        raise ValueError(f"blender_manifest.toml has no {key!r} to set")
    return "\n".join(out) + "\n"


# -- command ------------------------------------------------------------------------------------------
def default_wheel_cache() -> Path:
    """``$FACERIG_WHEEL_CACHE``, else the user cache (``$XDG_CACHE_HOME/facerig/wheels``)."""
    from facemodel.model import cache_dir

    return Path(os.environ.get("FACERIG_WHEEL_CACHE") or cache_dir() / "wheels")


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("addon", help="the Blender extension")
    asub = a.add_subparsers(dest="addon_command", metavar="ACTION")
    b = asub.add_parser("build", help="build the installable extension zip(s), one per platform, with their wheels")
    b.add_argument("-o", "--out", type=Path, default=Path("dist"),
                   help="output folder for facerig-<version>-<platform>.zip (default dist/), or a .zip file "
                        "name when building one platform")
    b.add_argument("--platform", action="append", choices=sorted(PLATFORM_TAGS) + ["all"],
                   help="target platform, repeatable; all = every one (default linux-x64)")
    b.add_argument("--wheel-cache", type=Path, default=None,
                   help="where downloaded wheels are kept between builds (default $FACERIG_WHEEL_CACHE, "
                        "else ~/.cache/facerig/wheels)")
    b.add_argument("--no-wheels", action="store_true", help="do not bundle wheels (users pip-install them)")
    b.set_defaults(func=cmd_addon_build)
    a.set_defaults(func=lambda args: a.print_help() or 2)


def _platforms(chosen: list[str] | None) -> list[str]:
    chosen = chosen or ["linux-x64"]
    return list(PLATFORM_TAGS) if "all" in chosen else list(dict.fromkeys(chosen))


def cmd_addon_build(args: argparse.Namespace) -> int:
    from .errors import CommandError

    platforms = _platforms(args.platform)
    if args.out.suffix == ".zip" and len(platforms) > 1:
        raise CommandError(f"{args.out} is one file; give a folder for {len(platforms)} platforms")
    if args.out.suffix == ".zip":
        check_output_file(args.out, overwrite=True, what="extension zip")   # a build output: replaced on rerun
    else:
        check_output_dir(args.out, what="extension folder")
    cache = args.wheel_cache or default_wheel_cache()
    dists = None if args.no_wheels else runtime_distributions()
    if dists:
        print("bundled distributions: " + ", ".join(f"{d}=={v}" for d, v in dists.items()))
    for platform in platforms:
        t = time.perf_counter()
        out = args.out if args.out.suffix == ".zip" else args.out / zip_name(platform)
        path = build_addon(out, platform, cache, dists, with_wheels=not args.no_wheels)
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.0f} s)")
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.startswith("wheels/") or info.filename.endswith(".onnx"):
                    print(f"  {info.compress_size / 1e6:6.1f} MB  {info.filename}")
    return 0


__all__ = ["PLATFORM_TAGS", "PYTHONS", "ZipEntry", "build_addon", "manifest_text", "platform_wheels",
           "register", "runtime_distributions", "supported_tags", "write_zip", "zip_name"]
