"""Image checks and preparation, on real images that Pillow generates in memory.

Hostile input is the point of this module, so besides each format and transformation there are
hand-made decompression bombs, cut-off files, fake extensions and a fuzz run: whatever the bytes,
the only exception that may come out is ``ImageRejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import struct
import sys
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from languagebuddy.events import Media
from languagebuddy.media.images import (
    CODES,
    HEIF_SUPPORTED,
    ImageRejected,
    prepare_image,
    prepare_image_async,
)
from languagebuddy.media.types import PreparedImage

RED = (220, 20, 20)
BLUE = (20, 20, 220)
GREEN = (20, 200, 20)
ORIENTATION = 0x0112

FORMATS = ["JPEG", "PNG", "WEBP", "GIF"] + (["HEIF"] if HEIF_SUPPORTED else [])


# --------------------------------------------------------------------------- helpers


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Something that compresses like a photo: smooth gradients plus sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1
    ).astype(np.int16)
    noisy = base + rng.integers(-12, 12, base.shape, dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def halves(width: int, height: int, left: tuple[int, int, int], right: tuple[int, int, int]):
    """Left half one colour, right half another: shows which way an image was turned."""
    im = Image.new("RGB", (width, height), left)
    im.paste(right, (width // 2, 0, width, height))
    return im


def decoded(prepared: PreparedImage) -> Image.Image:
    im = Image.open(io.BytesIO(prepared.jpeg))
    assert im.format == "JPEG"
    im.load()
    return im


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR dimensions and fix its CRC, as a bomb crafter would."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + png_chunk(b"IHDR", ihdr) + data[33:]


def compressible_png_bomb(width: int, height: int) -> bytes:
    """A genuine, valid 1-bit PNG of ``width`` x ``height`` that is all black: a few KiB."""
    row = b"\x00" + bytes((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every pixel decode (ImageFile.load), to prove a bomb was never decoded."""
    calls: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        calls.append(self.format or "?")
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


@pytest.fixture(scope="module")
def twelve_mp_jpeg() -> bytes:
    return encode(photo(4000, 3000), "JPEG", quality=90)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_becomes_an_rgb_jpeg(fmt: str) -> None:
    data = encode(halves(320, 240, RED, BLUE), fmt)
    prepared = prepare_image(data)
    out = decoded(prepared)
    assert out.mode == "RGB"
    assert prepared.original_format == fmt
    assert (prepared.original_width, prepared.original_height) == (320, 240)
    assert (prepared.width, prepared.height) == out.size == (320, 240)
    assert prepared.original_size == len(data)
    assert prepared.sha256 == hashlib.sha256(data).hexdigest()
    assert near(out.getpixel((40, 120)), RED)
    assert near(out.getpixel((280, 120)), BLUE)


def test_multi_picture_jpeg_from_a_phone_is_a_jpeg() -> None:
    im = photo(300, 200)
    data = encode(im, "MPO", save_all=True, append_images=[im.resize((150, 100))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    prepared = prepare_image(data)
    assert prepared.original_format == "JPEG"
    assert (prepared.width, prepared.height) == (300, 200)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in (RED, BLUE, GREEN)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    out = decoded(prepare_image(data))
    assert near(out.getpixel((32, 32)), RED)


def test_animated_webp_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in (GREEN, RED)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    out = decoded(prepare_image(data))
    assert near(out.getpixel((32, 32)), GREEN)


def test_meta_describes_the_image_without_its_bytes() -> None:
    prepared = prepare_image(encode(photo(100, 80), "PNG"))
    meta = prepared.meta
    assert meta["format"] == "PNG"
    assert (meta["width"], meta["height"], meta["sent_width"], meta["sent_height"]) == (
        100,
        80,
        100,
        80,
    )
    assert not any(isinstance(v, bytes | bytearray) for v in meta.values())
    assert "jpeg" not in repr(prepared).split("(", 1)[1].split("=")[0]


def test_type_comes_from_the_bytes_not_the_name_or_mime_type() -> None:
    media = Media(data=encode(photo(50, 40), "PNG"), mime_type="image/jpeg", filename="cat.jpg")
    assert prepare_image(media.data).original_format == "PNG"


# --------------------------------------------------------------------------- downscaling


@pytest.mark.parametrize(
    ("fmt", "size", "max_side"),
    [
        ("JPEG", (4000, 3000), 2048),  # DCT-scaled decode
        ("JPEG", (2500, 1000), 2048),  # full decode, then resize
        ("JPEG", (1000, 3000), 512),  # portrait, 1/4 DCT scale
        ("PNG", (3000, 1000), 2048),
        ("WEBP", (1200, 2600), 1024),
    ],
)
def test_big_images_are_downscaled_with_aspect_kept(
    fmt: str, size: tuple[int, int], max_side: int
) -> None:
    """The long-side rule alone (``max_short_side=None``)."""
    data = encode(photo(*size), fmt)
    prepared = prepare_image(data, max_side=max_side, max_short_side=None)
    out = decoded(prepared)
    assert (prepared.width, prepared.height) == out.size
    assert max(out.size) <= max_side
    # DCT scaling may stop short of max_side, but never by more than a quarter.
    assert max(out.size) >= 0.75 * max_side
    assert out.width / out.height == pytest.approx(size[0] / size[1], rel=0.01)
    assert (prepared.original_width, prepared.original_height) == size


def test_twelve_megapixel_jpeg_is_decoded_at_half_size_and_not_resized_up(
    twelve_mp_jpeg: bytes,
) -> None:
    prepared = prepare_image(twelve_mp_jpeg, max_short_side=None)
    assert (prepared.width, prepared.height) == (2000, 1500)


@pytest.mark.parametrize(
    ("fmt", "size", "expected"),
    [
        ("WEBP", (2000, 1500), (1024, 768)),  # the short side decides
        ("PNG", (3000, 1000), (2048, 683)),  # the long side decides
        ("PNG", (1000, 800), (960, 768)),
        ("PNG", (8000, 1000), (2048, 256)),  # a panorama
        ("PNG", (700, 500), (700, 500)),  # within both: untouched
        ("WEBP", (1200, 2600), (768, 1664)),  # portrait
    ],
)
def test_the_vision_models_rule_long_2048_short_768(
    fmt: str, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    prepared = prepare_image(encode(photo(*size), fmt))
    assert (prepared.width, prepared.height) == decoded(prepared).size == expected


def test_twelve_megapixel_jpeg_under_the_models_rule(twelve_mp_jpeg: bytes) -> None:
    """DCT scaling (1/4: 1000x750) may stop short of 768 px, by at most a quarter."""
    prepared = prepare_image(twelve_mp_jpeg)
    assert max(prepared.width, prepared.height) <= 2048
    assert 0.75 * 768 <= min(prepared.width, prepared.height) <= 768
    assert prepared.width / prepared.height == pytest.approx(4 / 3, rel=0.01)


def test_small_images_are_not_upscaled() -> None:
    prepared = prepare_image(encode(photo(40, 30), "JPEG"))
    assert (prepared.width, prepared.height) == (40, 30)


def test_jpeg_quality_is_applied() -> None:
    data = encode(photo(600, 400), "PNG")
    assert len(prepare_image(data, jpeg_quality=30).jpeg) < len(
        prepare_image(data, jpeg_quality=95).jpeg
    )


# --------------------------------------------------------------------------- orientation


def _with_orientation(im: Image.Image, fmt: str, orientation: int, **params: Any) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(im, fmt, exif=exif.tobytes(), **params)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_rotation_is_applied(fmt: str) -> None:
    # Stored landscape, left red / right blue; orientation 6 means "rotate 90° clockwise to
    # display", so the learner saw a portrait photo with red on top.
    data = _with_orientation(halves(400, 200, RED, BLUE), fmt, 6)
    prepared = prepare_image(data)
    out = decoded(prepared)
    assert out.size == (200, 400)
    assert (prepared.original_width, prepared.original_height) == (200, 400)
    assert near(out.getpixel((100, 50)), RED)
    assert near(out.getpixel((100, 350)), BLUE)


@pytest.mark.parametrize(
    ("orientation", "size", "top_left_colour"),
    [(1, (400, 200), RED), (3, (400, 200), BLUE), (8, (200, 400), BLUE), (2, (400, 200), BLUE)],
)
def test_other_orientations(
    orientation: int, size: tuple[int, int], top_left_colour: tuple[int, int, int]
) -> None:
    out = decoded(
        prepare_image(_with_orientation(halves(400, 200, RED, BLUE), "JPEG", orientation))
    )
    assert out.size == size
    assert near(out.getpixel((10, 10)), top_left_colour)


def test_rotation_and_downscale_together() -> None:
    data = _with_orientation(halves(4000, 3000, RED, BLUE), "JPEG", 6)
    prepared = prepare_image(data)
    out = decoded(prepared)
    assert out.height > out.width
    assert max(out.size) <= 2048
    assert (prepared.original_width, prepared.original_height) == (3000, 4000)
    assert near(out.getpixel((out.width // 2, 20)), RED)


def test_metadata_such_as_gps_is_stripped() -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 1
    exif[0x010F] = "PhoneMaker"  # camera make
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS latitude
    data = encode(photo(200, 100), "JPEG", exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).getexif()
    out = decoded(prepare_image(data))
    assert not out.getexif()
    assert b"PhoneMaker" not in prepare_image(data).jpeg


def test_broken_exif_does_not_lose_the_photo() -> None:
    data = encode(photo(120, 80), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    assert prepare_image(data).width == 120


# --------------------------------------------------------------------------- colour modes


def test_rgba_is_flattened_onto_white() -> None:
    im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    im.paste((*RED, 255), (25, 25, 75, 75))
    out = decoded(prepare_image(encode(im, "PNG")))
    assert out.mode == "RGB"
    assert near(out.getpixel((5, 5)), (255, 255, 255))
    assert near(out.getpixel((50, 50)), RED)


def test_half_transparent_pixels_blend_with_white() -> None:
    im = Image.new("RGBA", (40, 40), (0, 0, 0, 128))
    out = decoded(prepare_image(encode(im, "PNG")))
    assert near(out.getpixel((20, 20)), (127, 127, 127), tolerance=8)


def test_palette_with_transparency_is_flattened_onto_white() -> None:
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0, *RED] + [0] * (256 * 3 - 6))
    im.paste(1, (16, 16, 48, 48))
    for fmt in ("GIF", "PNG"):
        out = decoded(prepare_image(encode(im, fmt, transparency=0)))
        assert near(out.getpixel((2, 2)), (255, 255, 255)), fmt
        assert near(out.getpixel((32, 32)), RED), fmt


def test_palette_without_transparency() -> None:
    im = halves(64, 64, RED, BLUE).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    out = decoded(prepare_image(encode(im, "PNG")))
    assert near(out.getpixel((5, 32)), RED)


@pytest.mark.parametrize("mode", ["L", "LA", "1", "CMYK", "I;16"])
def test_other_modes_become_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    if mode == "I;16":
        im = Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16))
    else:
        im = Image.new("RGB", (32, 32), (128, 128, 128)).convert(mode)
    out = decoded(prepare_image(encode(im, fmt)))
    assert out.mode == "RGB"
    if mode in ("L", "LA", "I;16"):  # 16-bit mid-grey stays mid-grey, not clipped to white
        assert near(out.getpixel((16, 16)), (128, 128, 128), tolerance=10)


# --------------------------------------------------------------------------- rejections


def test_oversize_bytes_are_rejected_before_decoding(count_decodes: list[str]) -> None:
    data = encode(photo(300, 200), "PNG")
    with pytest.raises(ImageRejected) as info:
        prepare_image(data, max_bytes=len(data) - 1)
    assert info.value.code == "image_too_large"
    assert count_decodes == []
    assert prepare_image(data, max_bytes=len(data)).original_size == len(data)


def test_default_byte_limit_is_20_mib() -> None:
    with pytest.raises(ImageRejected) as info:
        prepare_image(b"\xff\xd8\xff" + bytes(20 * 1024 * 1024))
    assert info.value.code == "image_too_large"


def test_real_compressible_png_bomb_is_rejected_from_the_header(count_decodes: list[str]) -> None:
    bomb = compressible_png_bomb(8000, 6000)  # 48 MP, a few KiB on the wire
    assert len(bomb) < 100_000
    with pytest.raises(ImageRejected) as info:
        prepare_image(bomb)
    assert info.value.code == "image_too_many_pixels"
    assert count_decodes == []  # refused from the header, before any pixel is decoded


def test_the_bomb_generator_makes_real_images() -> None:
    """The same construction under the limit decodes, so the bomb above is a real PNG."""
    prepared = prepare_image(compressible_png_bomb(3000, 2000))
    assert (prepared.original_width, prepared.original_height) == (3000, 2000)
    assert near(decoded(prepared).getpixel((10, 10)), (0, 0, 0))


@pytest.mark.parametrize(
    "size",
    [
        (10_000, 10_000),  # over our 40 MP, over Pillow's warning threshold (~89 MP)
        (20_000, 20_000),  # over Pillow's hard DecompressionBombError threshold (~179 MP)
        (40_001, 1_000),  # just over 40 MP
        (65_535, 65_535),
    ],
)
def test_patched_png_header_bomb(size: tuple[int, int], count_decodes: list[str]) -> None:
    bomb = patch_png_size(encode(Image.new("L", (8, 8)), "PNG"), *size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own bomb warning must not escape
        with pytest.raises(ImageRejected) as info:
            prepare_image(bomb)
    assert info.value.code == "image_too_many_pixels"
    assert count_decodes == []


def test_pixel_limit_is_configurable() -> None:
    data = encode(photo(100, 100), "PNG")
    with pytest.raises(ImageRejected) as info:
        prepare_image(data, max_pixels=9_999)
    assert info.value.code == "image_too_many_pixels"
    assert prepare_image(data, max_pixels=10_000).width == 100


def test_gif_and_jpeg_header_bombs() -> None:
    gif = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65_535, 65_535)  # logical screen size
    jpeg = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)  # height, width
    for data in (bytes(gif), bytes(jpeg)):
        with pytest.raises(ImageRejected) as info:
            prepare_image(data)
        assert info.value.code == "image_too_many_pixels"


@pytest.mark.parametrize("fmt", FORMATS)
def test_cut_off_files_are_truncated(fmt: str) -> None:
    data = encode(photo(200, 150), fmt)
    with pytest.raises(ImageRejected) as info:
        prepare_image(data[: len(data) // 2])
    assert info.value.code == "image_truncated"


def test_truncated_big_jpeg_is_detected_on_the_fast_path(twelve_mp_jpeg: bytes) -> None:
    with pytest.raises(ImageRejected) as info:
        prepare_image(twelve_mp_jpeg[: len(twelve_mp_jpeg) * 2 // 3])
    assert info.value.code == "image_truncated"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        os.urandom(4096),
        bytes(range(256)) * 16,
        b"This is a text file that someone named holiday.jpg\n" * 20,
        b"<svg xmlns='http://www.w3.org/2000/svg'><rect width='10' height='10'/></svg>",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        b"GIF89a",
    ],
    ids=["empty", "one-byte", "random", "all-bytes", "text", "svg", "pdf", "png-sig", "gif-sig"],
)
def test_non_images_are_rejected(data: bytes) -> None:
    with pytest.raises(ImageRejected) as info:
        prepare_image(data)
    assert info.value.code in {"image_not_an_image", "image_truncated"}
    if not data.startswith((b"\x89PNG", b"GIF8")):
        assert info.value.code == "image_not_an_image"


def test_text_file_named_jpg_is_not_an_image() -> None:
    media = Media(data=b"Hello, I am not a photo.\n", mime_type="image/jpeg", filename="me.jpg")
    with pytest.raises(ImageRejected) as info:
        prepare_image(media.data)
    assert info.value.code == "image_not_an_image"


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("BMP", {}), ("TIFF", {}), ("ICO", {}), ("PPM", {}), ("EPS", {}), ("PDF", {})],
)
def test_real_images_of_unsupported_types_are_rejected(fmt: str, params: dict[str, Any]) -> None:
    """Only the decoders we need are tried: no EPS (ghostscript), TIFF, BMP… from strangers."""
    data = encode(Image.new("RGB", (16, 16), RED), fmt, **params)
    with pytest.raises(ImageRejected) as info:
        prepare_image(data)
    assert info.value.code == "image_not_an_image"


def test_rejections_carry_a_known_code_and_say_why() -> None:
    with pytest.raises(ImageRejected) as info:
        prepare_image(b"nope")
    assert info.value.code in CODES
    assert str(info.value)
    assert "image_not_an_image" in repr(info.value)


# --------------------------------------------------------------------------- fuzz


def _sample_images() -> list[bytes]:
    im = halves(24, 16, RED, BLUE)
    samples = [encode(im, f) for f in FORMATS]
    samples.append(encode(im.convert("RGBA"), "PNG"))
    samples.append(_with_orientation(im, "JPEG", 6))
    return samples


SAMPLES = _sample_images()
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _only_rejections(data: bytes) -> None:
    try:
        prepared = prepare_image(data, max_bytes=1 << 20)
    except ImageRejected as exc:
        assert exc.code in CODES
        return
    out = decoded(prepared)
    assert out.mode == "RGB"
    assert max(out.size) <= 2048


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _only_rejections(data)


@FUZZ
@given(
    st.sampled_from(
        [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x01\x00\x00WEBP"]
    ),
    st.binary(max_size=2048),
)
def test_fuzz_known_signatures_then_garbage(prefix: bytes, rest: bytes) -> None:
    _only_rejections(prefix + rest)


@FUZZ
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_fuzz_mutated_real_images(
    sample: bytes, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(sample)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _only_rejections(bytes(data))


# --------------------------------------------------------------------------- memory only

_WRITES: list[str] = []
_WATCHING = threading.Event()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Flags any file opened for writing or temp file made while ``_WATCHING`` is set."""
    if not _WATCHING.is_set():
        return
    if event == "open":
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        ):
            _WRITES.append(f"open {path!r} {mode!r}")
    elif event in ("tempfile.mkstemp", "tempfile.mkdtemp", "os.mkdir", "os.rename"):
        _WRITES.append(f"{event} {args!r}")


sys.addaudithook(_audit)  # cannot be removed, so it is a no-op unless a test is watching


@pytest.fixture
def watched_tempdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty private temp dir (immune to other processes using /tmp) plus the audit hook."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    assert tempfile.gettempdir() == str(private)
    _WRITES.clear()
    _WATCHING.set()
    try:
        yield private
    finally:
        _WATCHING.clear()


async def test_no_file_is_written_while_preparing(
    watched_tempdir: Path, twelve_mp_jpeg: bytes
) -> None:
    inputs = [*SAMPLES, twelve_mp_jpeg, encode(photo(2500, 1200), "PNG"), b"junk"]
    for data in inputs:
        with contextlib.suppress(ImageRejected):
            prepare_image(data)
        with contextlib.suppress(ImageRejected):
            await prepare_image_async(data)
    assert os.listdir(watched_tempdir) == []
    assert _WRITES == []


def test_the_write_watch_works(watched_tempdir: Path) -> None:
    """Guards the guard: a temp file made while watching is seen both ways."""
    with tempfile.NamedTemporaryFile() as handle:
        assert Path(handle.name).parent == watched_tempdir
        assert list(watched_tempdir.iterdir())
    assert _WRITES


# --------------------------------------------------------------------------- async


async def test_async_gives_the_same_result() -> None:
    data = encode(photo(800, 600), "WEBP")
    assert await prepare_image_async(data, max_side=400) == prepare_image(data, max_side=400)
    with pytest.raises(ImageRejected) as info:
        await prepare_image_async(b"nope")
    assert info.value.code == "image_not_an_image"


async def test_event_loop_stays_responsive(twelve_mp_jpeg: bytes) -> None:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    for _ in range(4):
        await prepare_image_async(twelve_mp_jpeg)
    busy = time.perf_counter() - start
    stop.set()
    await task
    # Run inline, one tick would wait for all four preparations.
    assert len(gaps) >= 10
    assert max(gaps) < busy / 3, f"loop stalled {max(gaps) * 1000:.0f} ms of {busy * 1000:.0f}"
