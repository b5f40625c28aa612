"""Check and prepare a learner's photo for the vision model, in memory only.

Everything here treats the bytes as hostile: the type comes from the content (never a MIME
header or file name), only the decoders we need are tried (no EPS/ghostscript surprises), the
pixel count is checked from the header *before* any pixel is decoded, and every failure ends in
an :class:`ImageRejected` whose ``code`` the tutor turns into a friendly reply.

The result is a JPEG with no metadata: EXIF (GPS position, camera serial) is applied
(orientation) and then dropped, so it never reaches the model, the logs or the database.

Its size follows the vision model's own rule: the model fits an image into 2048 x 2048 and then
scales its short side down to 768 px, so pixels beyond that are work and bytes for nothing. We
send what the model would keep (``max_side`` 2048, ``max_short_side`` 768).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import warnings
from typing import Final

from PIL import Image

from languagebuddy.media.types import PreparedImage

try:  # HEIC is what iPhones send; optional so a slim install still handles the rest.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the install
    HEIF_SUPPORTED = False

IMAGE_TOO_LARGE: Final = "image_too_large"
IMAGE_TOO_MANY_PIXELS: Final = "image_too_many_pixels"
IMAGE_TRUNCATED: Final = "image_truncated"
IMAGE_NOT_AN_IMAGE: Final = "image_not_an_image"
CODES: Final = frozenset(
    {IMAGE_TOO_LARGE, IMAGE_TOO_MANY_PIXELS, IMAGE_TRUNCATED, IMAGE_NOT_AN_IMAGE}
)

# Pillow format names we try, and no others. The JPEG opener also returns "MPO", Pillow's name
# for the multi-picture JPEGs many phone cameras write; we decode its first (main) picture.
_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "GIF") + (
    ("HEIF",) if HEIF_SUPPORTED else ()
)
_FORMAT_NAMES: Final = {"MPO": "JPEG"}

# JPEG DCT scaling (1/2, 1/4, 1/8) makes decoding several times faster, but only in powers of
# two. We accept a result down to this fraction of max_side: a 12 MP photo decoded at half size
# (2000 px) costs a quarter of a full decode, and the vision model scales images down to about
# 768 px on the short side anyway.
_DRAFT_MIN_FRACTION: Final = 0.75

_WHITE: Final = (255, 255, 255)

# Pillow's own bomb guard warns (or raises) from inside Image.open. Our limit is the one that
# counts, so its warning is silenced while we open; warnings filters are process-wide state, so
# the (sub-millisecond) header parse is serialised to keep our threads from racing on them.
_OPEN_LOCK = threading.Lock()


class ImageRejected(Exception):
    """The learner's image cannot be used; ``code`` says why (one of :data:`CODES`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"ImageRejected({self.code!r}, {str(self)!r})"


def prepare_image(
    data: bytes,
    *,
    max_side: int = 2048,
    max_short_side: int | None = 768,
    max_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = 40_000_000,
    jpeg_quality: int = 85,
) -> PreparedImage:
    """Check ``data`` and turn it into an upright RGB JPEG whose long side is at most
    ``max_side`` and short side at most ``max_short_side`` (None or 0: no short-side rule).

    Raises :class:`ImageRejected` for anything unusable, and nothing else for any input.
    CPU-bound: from async code use :func:`prepare_image_async`.
    """
    size = len(data)
    if size > max_bytes:
        raise ImageRejected(IMAGE_TOO_LARGE, f"{size} bytes is over the limit of {max_bytes}")
    if size == 0:
        raise ImageRejected(IMAGE_NOT_AN_IMAGE, "empty file")
    digest = hashlib.sha256(data).hexdigest()

    im = _open(data, max_pixels)
    try:
        fmt = _FORMAT_NAMES.get(im.format or "", im.format or "")
        raw_w, raw_h = im.size
        wanted = _fit(raw_w, raw_h, max_side, max_short_side)
        if fmt == "JPEG" and wanted != (raw_w, raw_h):
            _draft(im, raw_w, raw_h, max(wanted))
        try:
            im.load()
        except Image.DecompressionBombError as exc:  # a GIF frame growing the canvas
            raise ImageRejected(IMAGE_TOO_MANY_PIXELS, str(exc)) from None
        except Exception as exc:
            # The header parsed, so this is an image whose data does not decode to the end:
            # in practice a cut-off upload or download.
            raise ImageRejected(
                IMAGE_TRUNCATED, f"{fmt} data does not decode: {type(exc).__name__}"
            ) from None
        # After load: PNG keeps EXIF wherever it likes, so reading it may decode the image,
        # which must not happen before the pixel check.
        orientation = _orientation(im)
        # From the decoded size: a JPEG draft may already be at or below the target.
        target = _fit(*im.size, max_side, max_short_side)
        try:
            out = _to_rgb(im)
            if out.size != target:
                out = out.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
            out = _apply_orientation(out, orientation)
            buf = io.BytesIO()
            out.save(buf, "JPEG", quality=jpeg_quality)
        except Exception as exc:  # exotic modes or metadata Pillow cannot convert
            raise ImageRejected(
                IMAGE_NOT_AN_IMAGE, f"{fmt} cannot be converted: {type(exc).__name__}"
            ) from None
    finally:
        im.close()

    orig_w, orig_h = (raw_h, raw_w) if orientation in _SWAPS_AXES else (raw_w, raw_h)
    return PreparedImage(
        jpeg=buf.getvalue(),
        width=out.width,
        height=out.height,
        original_width=orig_w,
        original_height=orig_h,
        original_format=fmt,
        original_size=size,
        sha256=digest,
    )


async def prepare_image_async(
    data: bytes,
    *,
    max_side: int = 2048,
    max_short_side: int | None = 768,
    max_bytes: int = 20 * 1024 * 1024,
    max_pixels: int = 40_000_000,
    jpeg_quality: int = 85,
) -> PreparedImage:
    """:func:`prepare_image` in a worker thread, so the event loop keeps serving webhooks and
    call audio while a photo decodes (Pillow releases the GIL while it decodes and resizes)."""
    return await asyncio.to_thread(
        prepare_image,
        data,
        max_side=max_side,
        max_short_side=max_short_side,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        jpeg_quality=jpeg_quality,
    )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the type from the bytes and read the header only; enforce the pixel limit."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow's bomb warning (our limit is checked below), and its complaints about
            # the malformed EXIF that hostile input brings: noise in a server's log.
            warnings.filterwarnings("ignore", module=r"PIL\.")
            im = Image.open(io.BytesIO(data), formats=_FORMATS)
    except Image.DecompressionBombError as exc:
        # Over twice Pillow's MAX_IMAGE_PIXELS: far beyond any sane max_pixels as well.
        raise ImageRejected(IMAGE_TOO_MANY_PIXELS, str(exc)) from None
    except Exception as exc:
        if _container_cut_off(data):
            raise ImageRejected(IMAGE_TRUNCATED, "the file ends before its header says") from None
        raise ImageRejected(
            IMAGE_NOT_AN_IMAGE, f"not a supported image ({type(exc).__name__})"
        ) from None
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise ImageRejected(IMAGE_NOT_AN_IMAGE, f"invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        im.close()
        raise ImageRejected(
            IMAGE_TOO_MANY_PIXELS,
            f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels}",
        )
    return im


_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)


def _container_cut_off(data: bytes) -> bool:
    """True for a WebP or HEIC whose container declares more bytes than arrived.

    Their decoders check the whole container while opening, so a cut-off upload of these fails
    like a non-image; the declared lengths tell the two apart, for a more helpful reply.
    """
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        pos = 0
        while pos + 8 <= len(data):  # walk the top-level ISO-BMFF boxes
            box = int.from_bytes(data[pos : pos + 4], "big")
            if box == 1 and pos + 16 <= len(data):  # 64-bit "largesize"
                box = int.from_bytes(data[pos + 8 : pos + 16], "big")
            if box == 0:  # "to the end of the file"
                return False
            if box < 8:
                return False  # malformed, not cut off
            pos += box
        return pos > len(data)
    return False


def _fit(
    width: int, height: int, max_side: int, max_short_side: int | None = None
) -> tuple[int, int]:
    """The size with the long side at most ``max_side``, the short side at most
    ``max_short_side`` (when given) and the aspect ratio kept."""
    scale = min(1.0, max_side / max(width, height))
    if max_short_side:
        scale = min(scale, max_short_side / min(width, height))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draft(im: Image.Image, width: int, height: int, max_side: int) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 size: the largest reduction that keeps the long
    side at or above ``_DRAFT_MIN_FRACTION`` of ``max_side`` (the target's long side)."""
    long_side = max(width, height)
    for s in (8, 4, 2):
        if -(-long_side // s) >= max_side * _DRAFT_MIN_FRACTION:
            # Pillow picks the largest power of two with size // requested >= s.
            im.draft("RGB", (max(1, width // s), max(1, height // s)))
            return


_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8); 1 when absent or unreadable."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Hostile input brings malformed EXIF; Pillow's complaints about it are noise.
            warnings.filterwarnings("ignore", module=r"PIL\.")
            value = im.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF must not cost the learner their photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


_TRANSPOSE: Final = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _apply_orientation(im: Image.Image, orientation: int) -> Image.Image:
    """Turn the (already downscaled, so cheap) image upright.

    Same mapping as ``ImageOps.exif_transpose``, applied after resizing instead of on the
    full-size pixels; the output carries no EXIF, so nothing can rotate it twice.
    """
    for method in _TRANSPOSE.get(orientation, ()):
        im = im.transpose(method)
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB with any transparency flattened onto white (what a chat app shows behind it)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16"):  # 16-bit greyscale PNG: scale, do not clip
        im = im.convert("I")
    if im.mode == "I":
        im = im.point(lambda v: v * (1 / 256)).convert("L")
    if im.mode == "P":
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    elif im.mode in ("LA", "La", "RGBa", "PA") or (
        im.mode in ("L", "RGB") and "transparency" in im.info
    ):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


__all__ = [
    "CODES",
    "HEIF_SUPPORTED",
    "IMAGE_NOT_AN_IMAGE",
    "IMAGE_TOO_LARGE",
    "IMAGE_TOO_MANY_PIXELS",
    "IMAGE_TRUNCATED",
    "ImageRejected",
    "prepare_image",
    "prepare_image_async",
]
