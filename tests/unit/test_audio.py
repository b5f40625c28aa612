"""The audio codecs, with real files made by PyAV: every inbound format decodes to its real
length, bad audio is refused with the right code, the encoders write what the platforms play,
and the decoder survives any bytes (hypothesis)."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from languagebuddy.media.audio import (
    AUDIO_CORRUPT,
    AUDIO_EMPTY,
    AUDIO_SILENT,
    AUDIO_TOO_LONG,
    CODES,
    AudioRejected,
    VoiceEncoder,
    prepare_audio,
    prepare_audio_async,
)
from tests.audio_samples import (
    INBOUND_FORMATS,
    SAMPLE_TEXT,
    decoded,
    encode,
    quiet_note,
    voice_note,
)
from tests.fakes.openai_audio import speech_like

PASSED_THROUGH = {"ogg_opus": "ogg", "m4a": "m4a", "mp4": "m4a", "mp3": "mp3"}


@pytest.mark.parametrize("fmt", sorted(INBOUND_FORMATS))
def test_every_inbound_format_decodes_to_its_real_length(fmt: str) -> None:
    data = voice_note(fmt, seconds=6.0)
    audio = prepare_audio(data)
    assert audio.duration_s == pytest.approx(6.0, abs=0.15)
    assert 0.25 <= audio.speech_s <= audio.decoded_s <= audio.duration_s + 0.05
    if fmt in ("ogg_opus", "m4a", "mp4"):
        # Sent as it is, with an exact stated length: decoding stopped once speech was heard.
        assert audio.decoded_s < 2.0
    else:
        assert audio.decoded_s == pytest.approx(audio.duration_s)
    # What the endpoint reads goes as it came; AMR and raw AAC become a 16 kHz mono FLAC.
    sent_as = PASSED_THROUGH.get(fmt, "flac")
    assert audio.upload_name == f"voice.{sent_as}"
    container, _, rate, channels, seconds = decoded(audio.upload)
    if sent_as == "flac":
        assert (container, rate, channels) == ("flac", 16_000, 1)
        assert seconds == pytest.approx(audio.duration_s, abs=0.01)
    else:
        assert audio.upload == data
    assert "sha256" in audio.meta and "upload=" not in repr(audio)  # no bytes in logs


@pytest.mark.parametrize("fmt", ["mp3", "m4a", "ogg_opus", "aac"])
def test_stereo_notes_are_mixed_down(fmt: str) -> None:
    """A stereo file (a music-app recording) is heard as one voice, whichever sample format
    and layout its decoder gives (planar float, packed int…)."""
    import dataclasses

    pcm = speech_like(SAMPLE_TEXT)
    stereo = np.stack([pcm, (pcm * 0.5).astype(np.int16)])  # a louder left channel
    spec = dataclasses.replace(INBOUND_FORMATS[fmt], rate=48_000 if fmt == "ogg_opus" else 44_100)
    data = encode(stereo, 24_000, spec)
    audio = prepare_audio(data)
    assert audio.channels == 2
    assert audio.duration_s == pytest.approx(len(pcm) / 24_000, abs=0.1)
    assert audio.speech_s >= 0.25 and -12 < audio.peak_dbfs < 0


def test_a_damaged_file_is_salvaged_as_flac() -> None:
    """A passthrough-format file that breaks part-way is not sent as it is; what decoded is."""
    data = bytearray(voice_note("mp3", seconds=8.0))
    data[len(data) // 2 : len(data) // 2 + 4000] = b"\xff" * 4000  # broken frames mid-file
    try:
        audio = prepare_audio(bytes(data))
    except AudioRejected as exc:  # pragma: no cover - libav may also just skip the frames
        assert exc.code in CODES
    else:
        assert audio.upload_name in ("voice.mp3", "voice.flac")
        assert decoded(audio.upload)[4] > 1.0


def test_the_real_duration_comes_from_the_stream_not_the_header() -> None:
    """An M4A whose header states 30 s but holds 2 s of audio after its mdat is cut short
    decodes to what is there (no limit hit)."""
    long_note = voice_note("m4a", seconds=30.0)
    short = voice_note("m4a", seconds=2.0)
    assert prepare_audio(short).duration_s == pytest.approx(2.0, abs=0.1)
    # The 30 s file, truncated: the moov atom is at the end, so this cannot even be opened.
    with pytest.raises(AudioRejected) as refused:
        prepare_audio(long_note[: len(long_note) // 3])
    assert refused.value.code == AUDIO_CORRUPT


def test_a_file_that_states_its_length_is_refused_before_decoding() -> None:
    """The header says 40 s; the packets after it are garbage. Decoding would stop at the
    garbage, so only the stated length can give ``audio_too_long``."""
    data = bytearray(voice_note("mp4", seconds=40.0))
    mdat = data.find(b"mdat")
    data[mdat + 64 : mdat + 64 + 200_000] = os.urandom(min(200_000, len(data) - mdat - 64))
    with pytest.raises(AudioRejected) as refused:
        prepare_audio(bytes(data), max_seconds=20)
    assert refused.value.code == AUDIO_TOO_LONG
    assert "stated" in str(refused.value)


def test_speech_late_in_a_note_is_still_found() -> None:
    """Ten seconds of room noise, then a word: decoding goes on until it hears it."""
    import numpy as np

    noise = np.random.default_rng(3).normal(0, 10 ** (-65 / 20) * 32767, 240_000)
    pcm = np.concatenate([noise, speech_like("hola")]).astype(np.int16)
    audio = prepare_audio(encode(pcm, 24_000, INBOUND_FORMATS["ogg_opus"]))
    assert audio.decoded_s > 10.0 and audio.speech_s >= 0.25
    assert audio.duration_s == pytest.approx(len(pcm) / 24_000, abs=0.05)


def test_a_stream_without_a_stated_length_is_stopped_at_the_limit() -> None:
    """Raw ADTS AAC has no header length: decoding stops once it passes the limit."""
    with pytest.raises(AudioRejected) as refused:
        prepare_audio(voice_note("aac", seconds=30.0), max_seconds=10)
    assert refused.value.code == AUDIO_TOO_LONG


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"", AUDIO_EMPTY),
        (lambda: voice_note("ogg_opus", seconds=0.15), AUDIO_EMPTY),
        (lambda: quiet_note("ogg_opus"), AUDIO_SILENT),
        (lambda: quiet_note("m4a", dbfs=-90), AUDIO_SILENT),
        (lambda: os.urandom(40_000), AUDIO_CORRUPT),
        (lambda: b"This is not a voice note, just text named voice.ogg\n" * 50, AUDIO_CORRUPT),
        (lambda: voice_note("ogg_opus")[:200], AUDIO_CORRUPT),
        (lambda: _png(), AUDIO_CORRUPT),
        (lambda: _video_only(), AUDIO_CORRUPT),
    ],
    ids=["nothing", "tap", "silent", "digital-silence", "random", "text", "cut", "png", "video"],
)
def test_unusable_audio_is_refused_with_its_reason(make, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AudioRejected) as refused:
        prepare_audio(make())
    assert refused.value.code == code
    assert refused.value.code in CODES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=4096))
def test_the_decoder_survives_any_bytes(data: bytes) -> None:
    try:
        audio = prepare_audio(data)
    except AudioRejected as exc:
        assert exc.code in CODES
    else:  # pragma: no cover - random bytes that happen to be audio
        assert audio.duration_s > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(["ogg_opus", "m4a", "mp3", "amr_nb"]),
    cut=st.floats(min_value=0.05, max_value=0.95),
    noise=st.binary(min_size=1, max_size=512),
)
def test_the_decoder_survives_damaged_voice_notes(prefix: str, cut: float, noise: bytes) -> None:
    """Real notes cut short or with garbage spliced in: a result or a refusal, never a crash."""
    data = voice_note(prefix)
    at = int(len(data) * cut)
    for damaged in (data[:at], data[:at] + noise + data[at + len(noise) :]):
        try:
            prepare_audio(damaged)
        except AudioRejected as exc:
            assert exc.code in CODES


async def test_decoding_writes_nothing_to_disk(tmp_path: Path) -> None:
    """In memory only: no temporary file appears while a note is decoded and re-encoded."""
    before = set(os.listdir(tempfile.gettempdir()))
    audio = await prepare_audio_async(voice_note("amr_nb"))
    assert audio.upload_name == "voice.flac"
    assert set(os.listdir(tempfile.gettempdir())) - before == set()


# --------------------------------------------------------------------------- encoding


def _feed(encoder: VoiceEncoder, pcm: bytes, sizes: list[int]) -> None:
    position = 0
    for size in sizes:
        encoder.feed(pcm[position : position + size])
        position += size
    encoder.feed(pcm[position:])


@pytest.mark.parametrize(
    ("voice_format", "container", "codec", "rate"),
    [("ogg_opus", "ogg", "opus", 48_000), ("m4a", "mov,mp4,m4a,3gp,3g2,mj2", "aac", 24_000)],
)
def test_voice_notes_decode_as_the_platform_expects(
    voice_format: str, container: str, codec: str, rate: int
) -> None:
    pcm = speech_like("Muy bien. Ayer fuiste al mercado con tu hermana. ¿Qué compraste?")
    encoder = VoiceEncoder(voice_format)
    _feed(encoder, pcm.tobytes(), [1, 4799, 333, 9600, 7])
    note = encoder.finish()
    assert note.duration_s == pytest.approx(len(pcm) / 24_000)
    got = decoded(note.data)
    assert got[:4] == (container, codec, rate, 1)
    assert got[4] == pytest.approx(note.duration_s, rel=0.05)
    assert note.mime == {"ogg_opus": "audio/ogg; codecs=opus", "m4a": "audio/mp4"}[voice_format]


@settings(max_examples=25, deadline=None)
@given(
    voice_format=st.sampled_from(["ogg_opus", "m4a"]),
    sizes=st.lists(st.integers(min_value=0, max_value=20_000), min_size=1, max_size=30),
    seconds=st.floats(min_value=0.3, max_value=3.0),
)
def test_encoder_round_trip_whatever_the_chunking(
    voice_format: str, sizes: list[int], seconds: float
) -> None:
    """The note lasts what was fed, however the speech stream was cut into chunks (odd byte
    counts included), and decodes back to the same signal level."""
    pcm = speech_like("x" * int(seconds * 15))
    encoder = VoiceEncoder(voice_format)
    _feed(encoder, pcm.tobytes(), sizes)
    note = encoder.finish()
    *_, length = decoded(note.data)
    # AAC comes in whole frames of 1024 samples and the mp4 keeps the last one's padding, so
    # an M4A may decode up to one frame (43 ms at 24 kHz) longer; OGG trims Opus exactly.
    last_frame = 1024 / 24_000 if voice_format == "m4a" else 0.0
    expected = len(pcm) / 24_000
    slack = max(0.05 * expected, 0.03)
    assert expected - slack <= length <= expected + slack + last_frame
    back = prepare_audio(note.data)  # our own decoder reads our own notes
    assert back.speech_s > 0.2


def test_an_encoder_without_audio_refuses_to_finish() -> None:
    encoder = VoiceEncoder("ogg_opus")
    with pytest.raises(ValueError):
        encoder.finish()
    encoder.close()  # idempotent after a failed finish


def test_inbound_samples_are_what_they_claim() -> None:
    """Guards the inputs: each sample file really is its format."""
    expected = {
        "ogg_opus": ("ogg", "opus"),
        "aac": ("aac", "aac"),
        "m4a": ("mov,mp4,m4a,3gp,3g2,mj2", "aac"),
        "amr_nb": ("amr", "amrnb"),
        "mp4": ("mov,mp4,m4a,3gp,3g2,mj2", "aac"),
        "mp3": ("mp3", "mp3float"),
    }
    for name, (container, codec) in expected.items():
        got = decoded(voice_note(name))
        assert got[:2] == (container, codec), name
        assert got[3] == 1


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    return buffer.getvalue()


def _video_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_encode_helper_round_trips() -> None:
    pcm = speech_like("hola")
    for fmt in INBOUND_FORMATS.values():
        if fmt.name != "amr_nb":  # a recording: PyAV no longer ships an AMR encoder
            assert decoded(encode(pcm, 24_000, fmt))[4] > 0.3
