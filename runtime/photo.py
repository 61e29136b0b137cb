"""Reading photos into one canonical form, and the canonical network crop.

Everything downstream (detector, regressor, texture projection) wants the same thing: an
upright uint8 RGB array. Photos arrive as JPEG/PNG/WebP/TIFF/GIF/HEIC/AVIF, grayscale, with alpha, 16-bit
or float, and phones store them sideways with an EXIF orientation tag; this module absorbs
all of that in one place. No bpy, no torch.

Pixel convention (DEVELOPERS.md): origin at the top-left image corner, pixel centres at +0.5.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .colour_profile import to_srgb
from .formats import HEIF_SUFFIXES, PHOTO_SUFFIXES
from .limits import DECODE_MAX_PIXELS, PIXEL_LIMIT, decode_reduction, megapixels

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 48          # below this no detector finds a face worth reconstructing
ALPHA_BACKGROUND = 255       # transparent pixels are composited onto white (studio backdrop)


class PhotoError(ValueError):
    """A user-facing problem with the input photo (one clear line, no traceback)."""


class ImageReadError(PhotoError):
    """The file is not an image OpenCV can decode."""


class ImageTooSmallError(PhotoError):
    """The image is too small to hold a reconstructable face."""


class PhotoNotFoundError(PhotoError, FileNotFoundError):
    """No file at the photo's path (still a ``FileNotFoundError`` for callers that catch that)."""


class ImageTooLargeError(PhotoError):
    """The image has more pixels than facerig reads (:data:`limits.PIXEL_LIMIT`)."""


@functools.lru_cache(maxsize=1)
def pillow_image() -> Any:
    """``PIL.Image`` with the HEIF/HEIC opener registered when pillow-heif is installed (phones save
    HEIC by default; neither OpenCV nor Pillow alone decodes it); None without Pillow (Blender's
    own Python may lack it when the add-on was built without wheels)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        import pillow_heif
    except ImportError:
        log.debug("pillow-heif not installed: HEIC/HEIF photos cannot be read")
    else:
        pillow_heif.register_heif_opener()
    # facerig's own budget (checked from the header before any decoding) replaces Pillow's
    # decompression-bomb limit (89 MP warns, 179 MP fails), which would hide the orientation and colour
    # profile of an accepted 100-MP photo and warn on stderr.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < PIXEL_LIMIT:
        Image.MAX_IMAGE_PIXELS = PIXEL_LIMIT
    return Image


def heif_supported() -> bool:
    """Whether HEIC/HEIF photos can be read here."""
    image = pillow_image()
    return image is not None and ".heic" in image.registered_extensions()


def _photo_header(path: Path, data: bytes) -> tuple[int, bytes | None]:
    """(EXIF orientation 1–8, embedded ICC colour profile or None) of the file at ``path``, whose bytes are
    ``data``, read from the header only.

    HEIF stores the rotation in its own boxes, which libheif applies while decoding; pillow-heif
    then reports orientation 1, so a phone's HEIC is not turned twice."""
    image = pillow_image()
    if image is None:  # pragma: no cover - Pillow is a mediapipe dependency
        return 1, None
    try:
        with image.open(path) as im:
            icc = im.info.get("icc_profile") or None
            try:
                value = int(_exif(im, data).get(0x0112, 1))
            except Exception:  # noqa: BLE001 - a broken EXIF block must not make the photo unreadable
                value = 1
    except Exception:  # noqa: BLE001 - what Pillow cannot open, OpenCV may still have decoded
        return 1, None
    return (value if 1 <= value <= 8 else 1), icc


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_METADATA_CHUNKS = frozenset({b"eXIf", b"iTXt", b"tEXt", b"zTXt"})   # where Pillow finds EXIF / XMP


def _png_chunks(data: bytes | memoryview) -> Iterator[tuple[bytes, int]]:
    """(type, length) of each whole chunk header of a PNG's bytes, in order, up to IEND or the end of the data
    (nothing when ``data`` is not a PNG). Walks the headers only: no chunk is read or checked."""
    view = memoryview(data)
    if bytes(view[:8]) != _PNG_SIGNATURE:
        return
    pos = 8
    while pos + 8 <= len(view):
        length, kind = struct.unpack(">I4s", view[pos: pos + 8])
        yield kind, length
        if kind == b"IEND":
            return
        pos += length + 12     # length, type, data, CRC


def _png_metadata_after_pixels(data: bytes | memoryview) -> bool:
    """Whether a PNG's bytes keep EXIF or text (XMP) chunks after the pixel data (IDAT); True also for anything
    unexpected (no IEND, not a PNG), so that Pillow decides."""
    pixels = False
    for kind, _ in _png_chunks(data):
        if kind == b"IEND":
            return False
        if kind == b"IDAT":
            pixels = True
        elif pixels and kind in _PNG_METADATA_CHUNKS:
            return True
    return True


def _exif(im: Any, data: bytes) -> Any:
    """``im.getexif()`` of the image opened from ``data``, without decoding a PNG: Pillow's PNG ``getexif``
    decodes every pixel to look for EXIF after the image data (as long as OpenCV's decode of the photo again);
    when the chunk headers show none there, the EXIF read from the header (``Image.getexif`` of the base class)
    is the same."""
    if getattr(im, "format", None) == "PNG" and not _png_metadata_after_pixels(data):
        return pillow_image().Image.getexif(im)
    return im.getexif()


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip ``image`` so that an EXIF ``orientation`` photo is displayed upright."""
    ops = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops.get(orientation, ops[1])(image))


def to_rgb8(decoded: np.ndarray, bgr: bool = True) -> np.ndarray:
    """Any decoded array (gray/BGR/BGRA, 8/16-bit/float) → uint8 RGB (H, W, 3)."""
    img = decoded
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = (np.clip(np.nan_to_num(img), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    ch = img.shape[2]
    if ch in (2, 4):  # gray+alpha or colour+alpha: composite onto the backdrop
        alpha = img[:, :, -1:].astype(np.float32) / 255.0
        colour = img[:, :, :-1].astype(np.float32)
        img = (colour * alpha + ALPHA_BACKGROUND * (1.0 - alpha) + 0.5).astype(np.uint8)
        ch -= 1
    if ch == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if ch != 3:
        raise ImageReadError(f"unsupported image with {ch} channels")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(img)


def _decode_with_pillow(path: Path) -> np.ndarray | None:
    """First frame as BGR(A) uint8 for what OpenCV cannot decode (GIF, HEIC/HEIF, AVIF), when Pillow
    is installed (the command line has it; Blender's Python may not); None when it cannot read the
    file either. Alpha is kept so that ``to_rgb8`` composites it as for PNG."""
    image = pillow_image()
    if image is None:
        return None
    try:
        with image.open(path) as img:
            alpha = "A" in img.getbands() or "transparency" in img.info
            rgb = np.asarray(img.convert("RGBA" if alpha else "RGB"))
    except image.DecompressionBombError as exc:
        raise ImageReadError(f"{path.name} is too large to read safely ({exc})") from exc
    except (OSError, ValueError):
        return None
    order = [2, 1, 0, 3] if alpha else [2, 1, 0]
    return np.ascontiguousarray(rgb[:, :, order])


def _unreadable(path: Path) -> ImageReadError:
    if path.suffix.lower() in HEIF_SUFFIXES and not heif_supported():
        return ImageReadError(f"{path.name} is a HEIC/HEIF photo, and reading it needs pillow-heif "
                              "(pip install pillow-heif; the add-on's release zip bundles it)")
    return ImageReadError(f"{path.name} is not a readable image "
                          f"({', '.join(s.lstrip('.').upper() for s in PHOTO_SUFFIXES)})")


def load_image(path: str | Path, min_side: int = MIN_IMAGE_SIDE,
               max_decode_pixels: int | None = DECODE_MAX_PIXELS) -> np.ndarray:
    """Read any common image file as upright uint8 RGB (H, W, 3).

    Decodes with ``IMREAD_UNCHANGED`` (keeps 16 bit and alpha, which OpenCV would otherwise
    handle silently and differently per format) and applies the EXIF orientation and the embedded
    colour profile (Display P3, Adobe RGB … → sRGB) itself. The size is checked from the header first
    (:func:`decode_photo`): over :data:`limits.PIXEL_LIMIT` is refused, over ``max_decode_pixels`` (None:
    no reduction, for callers whose labels are in the file's pixels) is decoded reduced.
    """
    return decode_photo(path, min_side, max_decode_pixels).image


def check_size(image: np.ndarray, min_side: int = MIN_IMAGE_SIDE, name: str = "image") -> None:
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise ImageTooSmallError(f"{name} is {w}×{h} pixels; at least {min_side} pixels per side are "
                                 "needed to find and reconstruct a face")


def as_rgb8(image: np.ndarray) -> np.ndarray:
    """Accept an in-memory image (RGB/RGBA/gray, any depth) in the pipeline's canonical form."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise PhotoError(f"an image must be (H, W) or (H, W, C), got shape {arr.shape}")
    return to_rgb8(arr, bgr=False)


def crop_square(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Resample the square ``box`` (x0, y0, x1, y1; continuous pixels) to uint8 (size, size, 3).

    Bilinear ``cv2.warpAffine`` with border replication (as the augmentation pads). Output
    pixel centre j + 0.5 samples the continuous position x0 + (j + 0.5)·s, s = (x1 − x0)/size.
    For strong reductions the region is first area-averaged by an integer factor k, which maps
    continuous coordinates exactly by 1/k, so the geometry is unchanged and aliasing is avoided.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"crop box {box} is empty")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    k = int(min(sx, sy))
    ox = oy = 0
    if k >= 2:
        h, w = img.shape[:2]
        ix0, iy0 = max(0, math.floor(x0) - 2 * k), max(0, math.floor(y0) - 2 * k)
        ix1, iy1 = min(w, math.ceil(x1) + 2 * k), min(h, math.ceil(y1) + 2 * k)
        ix1 = ix0 + (ix1 - ix0) // k * k
        iy1 = iy0 + (iy1 - iy0) // k * k
        if ix1 - ix0 >= k and iy1 - iy0 >= k:
            region = img[iy0:iy1, ix0:ix1]
            img = cv2.resize(region, ((ix1 - ix0) // k, (iy1 - iy0) // k), interpolation=cv2.INTER_AREA)
            ox, oy = ix0, iy0
            x0, x1, y0, y1 = (x0 - ox) / k, (x1 - ox) / k, (y0 - oy) / k, (y1 - oy) / k
            sx, sy = sx / k, sy / k
    # dst index j ↔ src index (OpenCV: integer = pixel centre) = x0 + (j + 0.5)·s − 0.5
    m = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]], np.float64)
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(out.reshape(size, size, -1)[:, :, :3].astype(np.uint8, copy=False))


# -- pixel budget: the size from the header, refusal and reduced decoding (limits.py) ----------------
@dataclass(frozen=True)
class ImageHeader:
    """What a photo's header says, read without decoding any pixel."""

    width: int
    height: int
    format: str            # Pillow's name: "JPEG", "PNG", "GIF", "HEIF" …
    alpha: bool = False    # transparency (composited onto white, which OpenCV's reduced decoding would lose)

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class DecodedPhoto:
    """A decoded photo and how it relates to the file: ``image`` is ``photo_size`` divided by ``scale``."""

    image: np.ndarray
    photo_size: tuple[int, int]   # (width, height) of the file, upright
    scale: int                    # 1, or the reduction factor of a photo over the decode budget


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def check_regular_file(path: Path) -> None:
    """A missing path, or one that is not a regular file (a folder, a FIFO, a device), as one clear line;
    a FIFO must never be opened (reading it would block until something writes to it)."""
    if not path.exists():
        raise PhotoNotFoundError(f"photo not found: {path}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a pipe or a device?)"
        raise ImageReadError(f"{path} is {kind}, not a photo")


def too_large(name: str, width: int, height: int) -> ImageTooLargeError:
    return ImageTooLargeError(f"{name} is {width}×{height} pixels ({megapixels(width, height)}); facerig reads "
                              f"photos of up to {PIXEL_LIMIT / 1e6:.0f} MP: scale it down first")


def check_photo(path: str | Path) -> ImageHeader | None:
    """What can be known of a photo without decoding it: it is a regular file, and its header (when Pillow
    reads it) is within :data:`limits.PIXEL_LIMIT`. Lets a command refuse a bad photo before any work."""
    path = Path(path)
    check_regular_file(path)
    header = read_image_header(path)
    if header is not None and header.pixels > PIXEL_LIMIT:
        raise too_large(path.name, header.width, header.height)
    return header


def read_image_header(path: Path) -> ImageHeader | None:
    """Width, height and format from the header (Pillow's lazy open: nothing is decoded); None when
    Pillow does not know the format (OpenCV may still; the budget is then checked after decoding).
    A header over twice the budget (Pillow refuses those itself) raises :class:`ImageTooLargeError`."""
    image = pillow_image()
    if image is None:  # pragma: no cover - Pillow is a mediapipe dependency
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image.DecompressionBombWarning)
            with image.open(path) as im:
                width, height = im.size
                alpha = "A" in im.getbands() or "transparency" in im.info
                return ImageHeader(int(width), int(height), str(im.format or ""), alpha)
    except image.DecompressionBombError as exc:
        m = _BOMB_PIXELS.search(str(exc))
        size = f"{int(m.group(1)) / 1e6:.0f} MP" if m else f"over {2 * PIXEL_LIMIT / 1e6:.0f} MP"
        raise ImageTooLargeError(f"{path.name} has {size}; facerig reads photos of up to "
                                 f"{PIXEL_LIMIT / 1e6:.0f} MP: scale it down first") from None
    except Exception:  # noqa: BLE001 - not an image Pillow knows: OpenCV decides
        return None


def _reduce(decoded: np.ndarray, factor: int) -> np.ndarray:
    """Area-average by ``factor`` (what a JPEG decoder's scaling does), any depth and channel count."""
    if factor == 1:
        return decoded
    h, w = decoded.shape[:2]
    return cv2.resize(decoded, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
# PNG chunks before the pixels that change neither OpenCV's nor libspng's samples (neither applies gamma,
# colour chunks or bKGD; the ICC profile is applied afterwards from Pillow's header read, either way).
_SPNG_SAFE_CHUNKS = frozenset({b"IHDR", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"pHYs", b"sBIT", b"bKGD", b"tIME",
                               b"tEXt", b"zTXt", b"iTXt", b"eXIf"})


@functools.lru_cache(maxsize=1)
def _pyspng() -> Any:
    """pyspng (libspng) when installed, else None: an optional accelerator for 8-bit RGB/RGBA PNGs, 1.4×
    OpenCV's libpng (bench photo: 3.3 against 4.7 ms, the same samples). Setup installs it; the add-on's zip
    does not carry it (it bundles what its import probe loads, and this is imported only here, on a PNG),
    so Blender decodes with OpenCV."""
    try:
        import pyspng
    except ImportError:
        return None
    return pyspng


def _plain_png(buffer: np.ndarray | bytes) -> bool:
    """An 8-bit RGB or RGBA, non-interlaced PNG whose chunks before the pixels are all in
    :data:`_SPNG_SAFE_CHUNKS` (no palette, no tRNS): what libspng and OpenCV decode to the same samples."""
    data = memoryview(buffer)
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        return False
    depth, colour, _, _, interlace = data[24], data[25], data[26], data[27], data[28]
    if depth != 8 or colour not in (2, 6) or interlace:
        return False
    for kind, _ in _png_chunks(data):
        if kind == b"IDAT":
            return True
        if kind not in _SPNG_SAFE_CHUNKS:
            return False
    return False


def _decode_buffer(data: bytes, header: ImageHeader | None, factor: int) -> tuple[np.ndarray | None, bool]:
    """The file's bytes decoded, and whether the channels are in OpenCV's BGR order. Decoded by OpenCV, or by
    libspng for a plain PNG (:func:`_plain_png`, :func:`_pyspng`; RGB order). A photo over the budget without
    transparency is decoded reduced by OpenCV itself: a JPEG scaled inside libjpeg (never whole in memory:
    100 MP in 215 MB), others without OpenCV's second full-size buffer (100-MP PNG 430 MB instead of 644); with
    transparency it is decoded whole (alpha kept for compositing) and area-reduced."""
    if not data:
        return None, True
    spng = _pyspng() if factor == 1 else None
    if spng is not None and _plain_png(data):
        try:
            return spng.load(data), False
        except Exception:  # noqa: BLE001 - a PNG libspng refuses (a bad CRC, say): OpenCV decides
            log.debug("libspng could not decode the PNG; OpenCV decodes it")
    buffer = np.frombuffer(data, np.uint8)   # read-only: OpenCV only reads it
    if factor in _REDUCED and header is not None and not header.alpha:
        decoded = cv2.imdecode(buffer, _REDUCED[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
        if decoded is not None:
            return decoded, True
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    return (None if decoded is None else _reduce(decoded, factor)), True


def decode_photo(path: str | Path, min_side: int = MIN_IMAGE_SIDE,
                 max_decode_pixels: int | None = DECODE_MAX_PIXELS) -> DecodedPhoto:
    """:func:`load_image` with what it did: the file's size and the reduction factor (image pixel
    coordinates × ``scale`` = the file's pixel coordinates)."""
    path = Path(path)
    header = check_photo(path)
    factor = decode_reduction(header.width, header.height, max_decode_pixels) if header else 1
    data = path.read_bytes()
    orientation, icc = _photo_header(path, data)   # read before decoding, so the bytes go right after it
    decoded, bgr = _decode_buffer(data, header, factor)
    del data
    if decoded is None or decoded.size == 0:
        decoded, bgr = _decode_with_pillow(path), True
        if decoded is not None and decoded.size:
            decoded = _reduce(decoded, factor)
    if decoded is None or decoded.size == 0:
        raise _unreadable(path)
    if header is None:   # a format only OpenCV reads: the budget after decoding (OpenCV's own limit is 1 GP)
        h, w = decoded.shape[:2]
        if w * h > PIXEL_LIMIT:
            raise too_large(path.name, w, h)
        factor = decode_reduction(w, h, max_decode_pixels)
        decoded = _reduce(decoded, factor)
    if decoded.ndim == 3 and decoded.shape[2] > 4:
        decoded = decoded[:, :, :3]
    image = apply_orientation(to_srgb(to_rgb8(decoded, bgr), icc), orientation)
    check_size(image, min_side, path.name)
    if factor > 1:
        log.info("%s is %s: decoded reduced %d× to %d×%d (the budget is %s; docs/robustness.md)", path.name,
                 megapixels(*(header.width, header.height) if header else image.shape[1::-1]), factor,
                 image.shape[1], image.shape[0], megapixels(max_decode_pixels or 0, 1))
    log.debug("loaded %s: %dx%d (decoded %s %s)", path.name, image.shape[1], image.shape[0],
              decoded.dtype, decoded.shape)
    h, w = image.shape[:2]
    return DecodedPhoto(image, (w * factor, h * factor) if header is None else _upright(header, orientation), factor)


def _upright(header: ImageHeader, orientation: int) -> tuple[int, int]:
    """The file's (width, height) after its EXIF rotation (orientations 5–8 swap the sides)."""
    return (header.height, header.width) if orientation in (5, 6, 7, 8) else (header.width, header.height)
