"""Voice notes on WhatsApp: how soon the learner sees "You said" and gets the voice reply, against
what the provider latencies make unavoidable; codec speed; CPU and memory per note.

The service runs as in production, ``languagebuddy serve`` with its in-process worker, in a
process of its own, on SQLite in a temp dir (``--postgres`` for a scratch PostgreSQL database),
pointed at a fake WhatsApp Cloud API and a fake OpenAI that run here on 127.0.0.1 and inject
the provider latencies of the issue:

    transcription 0.7 s · chat: first token 0.4 s, then 40 tokens/s · speech: first byte 0.3 s,
    then 0.1 s per second of audio, streamed · WhatsApp media upload 0.15 s

Each learner sends a 15-second OGG/Opus voice note; the tutor answers with three sentences
(the fake streams one token per 2 characters: 60 tokens, 8 s of speech).

References, computed from the injected latencies and the reply actually produced:

- serial sum: transcription + the chat reply to its end + the whole reply synthesised at once
  + upload, one after the other (what a design without overlap costs);
- critical path: transcription + the chat reply to its end + synthesis of the *last* sentence
  only + upload: what no design can beat, since the last sentence exists only when the chat
  ends. Target: voice reply within 150 ms of it. "You said": within 150 ms of the transcription.

Time is measured from the webhook POST leaving this process to the request arriving at the fake
WhatsApp (``time.time()`` on both sides: one clock). Runs: 20 notes one at a time, then 20 notes
with 10 in flight. The service's CPU time and RSS come from /proc; codec speed is measured here
on one thread (``time.thread_time``), beside bare PyAV doing the same decode/encode.

    .venv/bin/python bench/voice.py                 # ~2.5 min
    .venv/bin/python bench/voice.py --notes 10 --concurrency 5
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
from common import (
    Column,
    ServeProcess,
    cpu_seconds,
    percentile,
    postgres_reachable,
    print_table,
    reset_hwm,
    rss,
    save_results,
    scratch_postgres,
    vm_hwm,
)

from languagebuddy.media.audio import VoiceEncoder, prepare_audio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the fakes live in tests/, which is not an installed package
    sys.path.insert(0, str(ROOT))

from tests.audio_samples import decoded, voice_note  # noqa: E402
from tests.fakes.openai import FakeOpenAI  # noqa: E402
from tests.fakes.openai_audio import speech_like  # noqa: E402
from tests.fakes.whatsapp import (  # noqa: E402
    FakeWhatsApp,
    whatsapp_audio_webhook,
    whatsapp_headers,
    whatsapp_text_webhook,
)

NAME = "voice"
NOTE_SECONDS = 15.0
TRANSCRIBE_S = 0.7
FIRST_TOKEN_S = 0.4
TOKENS_PER_S = 40.0
CHARS_PER_TOKEN = 2
SPEECH_FIRST_BYTE_S = 0.3
SPEECH_PER_AUDIO_S = 0.1
UPLOAD_S = 0.15
TARGET_OVERHEAD_MS = 150.0
TARGET_CODEC_X = 200.0
TRANSCRIPT = "Ayer fui al mercado con mi hermana y compramos fruta, pan y queso para la cena."
REPLY = (
    "¡Qué bien que fuiste al mercado con tu hermana! "
    "La fruta fresca es lo mejor para la cena. "
    "¿Qué fruta comprasteis las dos?"
)
WAIT_S = 60.0
DB_FILE = "lb.db"

COLUMNS = [
    Column("run", "run", width=10),
    Column("metric", "metric", width=28),
    Column("n", "n", width=3),
    Column("p50", "p50", ".0f", width=6),
    Column("p99", "p99", ".0f", width=6),
    Column("unit", "unit", width=4),
    Column("reference", "reference", width=24),
    Column("ref", "ref", ".0f", width=6),
    Column("vs_ref", "p50 vs ref", width=14),
    Column("target", "target", width=16),
    Column("result", "result", width=6),
]
STAGES = [
    "started",
    "learner",
    "download",
    "decode",
    "transcribe",
    "heard_sent",
    "first_token",
    "tutor_done",
    "first_audio",
    "synthesis_done",
    "encode",
    "upload",
    "send",
    "voice_sent",
]
SPLIT_COLUMNS = [
    Column("stage", "stage (ms; *_sent, first_*, *_done: since the webhook)", width=52),
    *(Column(k, k, ".0f", width=7) for k in ("seq_p50", "seq_p99", "conc_p50", "conc_p99")),
]


# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class References:
    chat_s: float
    sentence_audio_s: tuple[float, ...]

    @property
    def serial_s(self) -> float:
        whole = SPEECH_FIRST_BYTE_S + SPEECH_PER_AUDIO_S * sum(self.sentence_audio_s)
        return TRANSCRIBE_S + self.chat_s + whole + UPLOAD_S

    @property
    def critical_s(self) -> float:
        last = SPEECH_FIRST_BYTE_S + SPEECH_PER_AUDIO_S * self.sentence_audio_s[-1]
        return TRANSCRIBE_S + self.chat_s + last + UPLOAD_S

    @property
    def heard_s(self) -> float:
        return TRANSCRIBE_S


def references(sentences: Sequence[float]) -> References:
    tokens = math.ceil(len(REPLY) / CHARS_PER_TOKEN)
    chat = FIRST_TOKEN_S + (tokens - 1) / TOKENS_PER_S  # the fake's schedule for the last token
    return References(chat, tuple(sentences))


# --------------------------------------------------------------------------- codec speed


def _cpu(fn: Any, repeats: int = 5) -> float:
    """Best single-thread CPU seconds of ``fn()`` over ``repeats``."""
    best = math.inf
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def bare_decode(data: bytes) -> None:
    with av.open(io.BytesIO(data)) as container:
        for _ in container.decode(container.streams.audio[0]):
            pass


def bare_encode(pcm: Any, container_format: str, codec: str, rate: int) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


def ours_encode(pcm: bytes, voice_format: str) -> None:
    encoder = VoiceEncoder(voice_format)
    for start in range(0, len(pcm), 24_000):  # 0.5 s chunks, as the pipeline feeds it
        encoder.feed(pcm[start : start + 24_000])
    encoder.finish()


def codec_rows(note: bytes) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """x real time on one core: ours beside bare PyAV doing the same decode or encode."""
    import numpy as np

    rows: list[dict[str, Any]] = []
    figures: dict[str, float] = {}
    ours = _cpu(lambda: prepare_audio(note))
    bare = _cpu(lambda: bare_decode(note))
    amr = voice_note("amr_nb", seconds=NOTE_SECONDS)
    ours_amr = _cpu(lambda: prepare_audio(amr))
    bare_amr = _cpu(lambda: bare_decode(amr))
    adts = voice_note("aac", seconds=NOTE_SECONDS)
    ours_adts = _cpu(lambda: prepare_audio(adts))
    bare_adts = _cpu(lambda: bare_decode(adts))
    reply_pcm = np.concatenate([speech_like(REPLY)] * 2)  # ~16 s of speech
    seconds = len(reply_pcm) / 24_000
    pcm_bytes = reply_pcm.tobytes()
    enc_ogg = _cpu(lambda: ours_encode(pcm_bytes, "ogg_opus"))
    bare_ogg = _cpu(lambda: bare_encode(reply_pcm, "ogg", "libopus", 24_000))
    enc_m4a = _cpu(lambda: ours_encode(pcm_bytes, "m4a"))
    bare_m4a = _cpu(lambda: bare_encode(reply_pcm, "ipod", "aac", 24_000))
    full = "bare PyAV decode, all"
    specs = [
        # The WhatsApp case: the note itself is the upload; decoding stops at speech.
        ("check 15 s OGG/Opus note", NOTE_SECONDS / ours, full, NOTE_SECONDS / bare),
        ("decode 15 s AMR -> FLAC 16k", NOTE_SECONDS / ours_amr, full, NOTE_SECONDS / bare_amr),
        ("decode 15 s ADTS AAC -> FLAC", NOTE_SECONDS / ours_adts, full, NOTE_SECONDS / bare_adts),
        ("encode OGG/Opus (48k)", seconds / enc_ogg, "bare libopus, defaults", seconds / bare_ogg),
        ("encode M4A/AAC 24k", seconds / enc_m4a, "bare aac, defaults", seconds / bare_m4a),
    ]
    for metric, x, ref_name, ref_x in specs:
        rows.append(
            {
                "run": "codec",
                "metric": metric,
                "n": 5,
                "p50": x,
                "unit": "x rt",
                "reference": ref_name,
                "ref": ref_x,
                "vs_ref": f"{x / ref_x:.2f}x bare",
                "target": f">= {TARGET_CODEC_X:.0f}x",
                "result": "ok" if x >= TARGET_CODEC_X else "short",
            }
        )
        figures[metric] = x
    floor_cpu_ms = (ours + enc_ogg * 8.0 / seconds) * 1000  # one note's media work
    figures["media_floor_cpu_ms"] = floor_cpu_ms
    return rows, figures


# --------------------------------------------------------------------------- one note


@dataclass
class Note:
    user: str
    message_id: str
    media_id: str
    sent: float = 0.0
    heard_at: float | None = None
    voice_at: float | None = None
    audio_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def heard_ms(self) -> float:
        assert self.heard_at is not None
        return (self.heard_at - self.sent) * 1000

    @property
    def voice_ms(self) -> float:
        assert self.voice_at is not None
        return (self.voice_at - self.sent) * 1000


class Bench:
    def __init__(self, service: ServeProcess, wa: FakeWhatsApp, ai: FakeOpenAI, note: bytes):
        self.service = service
        self.wa = wa
        self.ai = ai
        self.note = note
        self.prefix = f"55{secrets.randbelow(10**5):05d}"
        self._count = 0
        self._scanned = 0
        self._lock = threading.Lock()
        self._notes: dict[str, Note] = {}  # by learner (wa_id)
        self._known: list[str] = []  # registered learners not yet used

    def new_user(self) -> str:
        with self._lock:
            self._count += 1
            return f"{self.prefix}{self._count:06d}"

    def register(self, count: int, in_flight: int) -> None:
        """``count`` learners say hello first (no injected latency yet), so that the notes
        come from known learners, as nearly all messages do; their voice notes are then
        taken in the order they were registered."""
        users = [self.new_user() for _ in range(count)]

        def hello(user: str) -> None:
            body = whatsapp_text_webhook("Hola, quiero practicar.", wa_id=user)
            with httpx.Client(trust_env=False, timeout=30) as client:
                response = client.post(
                    f"{self.service.base_url}/webhooks/whatsapp",
                    content=body,
                    headers=whatsapp_headers(body, self.wa.app_secret),
                )
            response.raise_for_status()
            deadline = time.time() + WAIT_S
            while not self.wa.texts_to(user):
                if time.time() > deadline:
                    raise RuntimeError(f"{user} was never answered")
                time.sleep(0.01)

        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            list(pool.map(hello, users))
        with self._lock:
            self._known.extend(users)
            self._scanned = len(self.wa.server.recorded("/messages", "POST"))  # not notes

    def new_note(self) -> Note:
        media_id = self.wa.add_media(self.note, "audio/ogg")
        with self._lock:
            user = self._known.pop(0) if self._known else None
        user = user or self.new_user()
        note = Note(user, "wamid.HBgN" + secrets.token_urlsafe(30), media_id)
        with self._lock:
            self._notes[user] = note
        return note

    def post(self, client: httpx.Client, note: Note) -> None:
        body = whatsapp_audio_webhook(note.media_id, wa_id=note.user, message_id=note.message_id)
        headers = whatsapp_headers(body, self.wa.app_secret)
        note.sent = time.time()
        response = client.post(
            f"{self.service.base_url}/webhooks/whatsapp", content=body, headers=headers
        )
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")

    def _collect(self) -> None:
        """Match the fake WhatsApp's received sends to their notes (each request once)."""
        with self._lock:
            requests = self.wa.server.recorded("/messages", "POST")
            for record in requests[self._scanned :]:
                body = record.json()
                note = self._notes.get(body.get("to", ""))
                if note is None:
                    continue
                if body.get("type") == "text" and note.heard_at is None:
                    note.heard_at = record.at  # "You said" is the first text
                elif body.get("type") == "audio":
                    note.voice_at = record.at
                    note.audio_id = body["audio"]["id"]
            self._scanned = len(requests)

    def wait(self, notes: Sequence[Note], timeout: float = WAIT_S) -> None:
        deadline = time.time() + timeout
        while True:
            self._collect()
            if all(n.voice_at is not None for n in notes):
                break
            if time.time() > deadline:
                self.service.alive()
                raise RuntimeError(f"voice replies missing after {timeout:.0f} s")
            time.sleep(0.005)
        self._read_timings(notes)

    def _read_timings(self, notes: Sequence[Note]) -> None:
        """The turns' stage timings, once the service has stored the last of them."""
        wanted = {n.message_id: n for n in notes}
        deadline = time.time() + 10
        while time.time() < deadline and any(not n.timings.get("voice_sent") for n in notes):
            with suppress(sqlite3.OperationalError, OSError):
                for message_id, timings in self._timings_rows(list(wanted)):
                    if timings:
                        loaded = json.loads(timings) if isinstance(timings, str) else timings
                        wanted[message_id].timings = loaded
            time.sleep(0.05)

    def _timings_rows(self, message_ids: list[str]) -> list[tuple[str, Any]]:
        url = self.service.env["DATABASE_URL"]
        if url.startswith("sqlite"):
            db = self.service.workdir / DB_FILE
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                marks = ",".join("?" * len(message_ids))
                return conn.execute(
                    "SELECT provider_message_id, timings FROM turns WHERE direction = 'in' "
                    f"AND provider_message_id IN ({marks})",
                    message_ids,
                ).fetchall()
        import asyncpg

        async def fetch() -> list[tuple[str, Any]]:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                rows = await conn.fetch(
                    "SELECT provider_message_id, timings::text FROM turns "
                    "WHERE direction = 'in' AND provider_message_id = ANY($1::text[])",
                    message_ids,
                )
            finally:
                await conn.close()
            return [(r[0], r[1]) for r in rows]

        return asyncio.run(fetch())


def run_notes(bench: Bench, count: int, in_flight: int) -> list[Note]:
    """``count`` notes, ``in_flight`` at a time (closed loop)."""
    notes = [bench.new_note() for _ in range(count)]

    def one(note: Note) -> Note:
        with httpx.Client(trust_env=False, timeout=30) as client:
            bench.post(client, note)
        bench.wait([note])
        return note

    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        return list(pool.map(one, notes))


def verify_notes(bench: Bench, notes: Sequence[Note], spoken_s: float) -> int:
    """Every voice reply is an OGG/Opus 48 kHz mono note as long as the reply's speech."""
    for note in notes:
        assert note.audio_id is not None
        data, _ = bench.wa.uploads[note.audio_id]
        container, codec, rate, channels, seconds = decoded(data)
        if (container, codec, rate, channels) != ("ogg", "opus", 48_000, 1):
            raise RuntimeError(f"unexpected voice note: {container} {codec} {rate} {channels}")
        if abs(seconds - spoken_s) > 0.05 * spoken_s:
            raise RuntimeError(f"voice note lasts {seconds:.2f} s, speech was {spoken_s:.2f} s")
    return len(notes)


# --------------------------------------------------------------------------- the run


def latency_rows(label: str, notes: Sequence[Note], refs: References) -> list[dict[str, Any]]:
    """ "You said" against the transcription; the voice note against the critical path
    (overhead, target +150 ms) and the serial sum (ratio)."""
    heard = [n.heard_ms for n in notes]
    voice = [n.voice_ms for n in notes]
    heard_ref, critical, serial = refs.heard_s * 1000, refs.critical_s * 1000, refs.serial_s * 1000

    def row(metric: str, values: list[float], reference: str, ref: float, ratio: bool) -> dict:
        p50 = percentile(values, 50)
        within = p50 < ref if ratio else p50 - ref <= TARGET_OVERHEAD_MS
        return {
            "run": label,
            "metric": metric,
            "n": len(values),
            "p50": p50,
            "p99": percentile(values, 99),
            "unit": "ms",
            "reference": reference,
            "ref": ref,
            "vs_ref": f"{p50 / ref:.2f}x" if ratio else f"+{p50 - ref:.0f} ms",
            "target": "< 1x" if ratio else f"<= +{TARGET_OVERHEAD_MS:.0f} ms",
            "result": "ok" if within else "short",
        }

    return [
        row('"You said" (transcription)', heard, "transcription latency", heard_ref, False),
        row("voice reply", voice, "critical path", critical, False),
        row("voice reply", voice, "serial sum", serial, True),
    ]


def split_rows(seq: Sequence[Note], conc: Sequence[Note]) -> list[dict[str, Any]]:
    def stat(notes: Sequence[Note], stage: str, p: float) -> float:
        values = [n.timings[stage] for n in notes if stage in n.timings]
        return percentile(values, p) if values else math.nan

    return [
        {
            "stage": stage,
            "seq_p50": stat(seq, stage, 50),
            "seq_p99": stat(seq, stage, 99),
            "conc_p50": stat(conc, stage, 50),
            "conc_p99": stat(conc, stage, 99),
        }
        for stage in STAGES
    ]


def service_env(wa: FakeWhatsApp, ai: FakeOpenAI, db_url: str) -> dict[str, str]:
    """The service's settings: the defaults (worker slots too) but for the fakes' addresses."""
    return {
        "DATABASE_URL": db_url,
        "OPENAI_API_KEY": ai.api_key,
        "OPENAI_BASE_URL": ai.base_url,
        "LB_OPENAI_MAX_RETRIES": "0",
        "LB_LOG_LEVEL": "warning",
        "WHATSAPP_ACCESS_TOKEN": wa.access_token,
        "WHATSAPP_PHONE_NUMBER_ID": wa.phone_number_id,
        "WHATSAPP_APP_SECRET": wa.app_secret,
        "WHATSAPP_VERIFY_TOKEN": wa.verify_token,
        "WHATSAPP_API_BASE_URL": wa.base_url,
    }


def measure(args: argparse.Namespace, db_url: str, tmp: Path) -> dict[str, Any]:
    note = voice_note("ogg_opus", seconds=NOTE_SECONDS)
    codec, figures = codec_rows(note)
    print_table(codec, COLUMNS)
    with FakeWhatsApp() as wa, FakeOpenAI() as ai:
        ai.audio.transcript(TRANSCRIPT, times=None)
        ai.reply(REPLY, times=None)
        env = service_env(wa, ai, db_url)  # serve migrates the schema on start
        with ServeProcess(tmp, env) as service:
            bench = Bench(service, wa, ai, note)
            bench.register(3 + 2 * args.notes, args.concurrency)
            ai.chat_first_token, ai.chat_tokens_per_second = FIRST_TOKEN_S, TOKENS_PER_S
            ai.chat_chars_per_token = CHARS_PER_TOKEN
            ai.audio.transcribe_delay = TRANSCRIBE_S
            ai.audio.speech_first_byte = SPEECH_FIRST_BYTE_S
            ai.audio.speech_seconds_per_audio_second = SPEECH_PER_AUDIO_S
            wa.upload_delay = UPLOAD_S
            warm = run_notes(bench, 3, 1)  # codecs, SDK, connections, caches
            sentences = [s.duration_s for s in ai.audio.speeches[:3]]
            refs = references(sentences)
            verify_notes(bench, warm, sum(sentences))
            [upload] = ai.audio.transcriptions[:1]
            if (upload.container, upload.codec) != ("ogg", "opus"):
                raise RuntimeError(f"the transcription got {upload.container}/{upload.codec}")
            ai.audio.verify_uploads = False  # its decoding would take the service's CPU
            pid = service.pid
            time.sleep(1.0)
            rss_rest = rss(pid)
            cpu0 = cpu_seconds(pid)
            seq = run_notes(bench, args.notes, 1)
            cpu1 = cpu_seconds(pid)
            rss_after_seq = rss(pid)
            hwm_ok = reset_hwm(pid)
            conc = run_notes(bench, args.notes, args.concurrency)
            cpu2 = cpu_seconds(pid)
            peak = vm_hwm(pid) if hwm_ok else None
            verified = verify_notes(bench, seq + conc, sum(sentences))
            ai.audio.verify_uploads = True
            service.alive()
    latency = latency_rows("1 at once", seq, refs) + latency_rows(
        f"{args.concurrency} in flight", conc, refs
    )
    cpu_seq_ms = (cpu1 - cpu0) * 1000 / len(seq)
    cpu_conc_ms = (cpu2 - cpu1) * 1000 / len(conc)
    floor = figures["media_floor_cpu_ms"]
    resources = [
        {
            "run": run,
            "metric": "service CPU per note",
            "n": len(seq),
            "p50": value,
            "unit": "ms",
            "reference": "decode+encode alone",
            "ref": floor,
            "vs_ref": f"{value / floor:.1f}x",
            "target": "-",
            "result": "-",
        }
        for run, value in (
            ("1 at once", cpu_seq_ms),
            (f"{args.concurrency} in flight", cpu_conc_ms),
        )
    ]
    growth_per_note = (rss_after_seq - rss_rest) / len(seq) / 1024
    resources.append(
        {
            "run": "1 at once",
            "metric": "RSS growth per note",
            "n": len(seq),
            "p50": growth_per_note,
            "unit": "KiB",
            "reference": "RSS at rest (MiB)",
            "ref": rss_rest / 2**20,
            "vs_ref": "-",
            "target": "~0 (no leak)",
            "result": "ok" if growth_per_note < 256 else "short",
        }
    )
    if peak is not None:
        resources.append(
            {
                "run": f"{args.concurrency} in flight",
                "metric": "peak RSS over rest",
                "n": len(conc),
                "p50": (peak - rss_rest) / 2**20,
                "unit": "MiB",
                "reference": "RSS at rest (MiB)",
                "ref": rss_rest / 2**20,
                "vs_ref": "-",
                "target": "-",
                "result": "-",
            }
        )
    print()
    print_table(latency + resources, COLUMNS)
    print()
    split = split_rows(seq, conc)
    print_table(split, SPLIT_COLUMNS)
    print(
        f"\nreferences: serial sum {refs.serial_s * 1000:.0f} ms, critical path "
        f"{refs.critical_s * 1000:.0f} ms (chat {refs.chat_s * 1000:.0f} ms, sentences "
        f"{', '.join(f'{s:.2f}' for s in sentences)} s of speech); {verified} notes verified"
    )
    return {
        "parameters": {
            **vars(args),
            "note_seconds": NOTE_SECONDS,
            "transcribe_s": TRANSCRIBE_S,
            "first_token_s": FIRST_TOKEN_S,
            "tokens_per_s": TOKENS_PER_S,
            "chars_per_token": CHARS_PER_TOKEN,
            "speech_first_byte_s": SPEECH_FIRST_BYTE_S,
            "speech_per_audio_s": SPEECH_PER_AUDIO_S,
            "upload_s": UPLOAD_S,
        },
        "references_ms": {
            "transcription": refs.heard_s * 1000,
            "critical_path": refs.critical_s * 1000,
            "serial_sum": refs.serial_s * 1000,
            "chat": refs.chat_s * 1000,
            "sentence_audio_s": sentences,
        },
        "codec": codec,
        "latency": latency,
        "resources": resources,
        "split": split,
        "notes": {
            "sequential": [
                {"heard_ms": n.heard_ms, "voice_ms": n.voice_ms, **n.timings} for n in seq
            ],
            "concurrent": [
                {"heard_ms": n.heard_ms, "voice_ms": n.voice_ms, **n.timings} for n in conc
            ],
        },
        "loadavg_end": list(os.getloadavg()),
    }


async def _postgres_url(stack: Any) -> str:
    reason = await postgres_reachable()
    if reason is not None:
        raise SystemExit(f"PostgreSQL not reachable: {reason}")
    return await stack.enter_async_context(scratch_postgres())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=20, help="notes per run (default 20)")
    parser.add_argument("--concurrency", type=int, default=10, help="notes in flight (10)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lb-bench-voice-") as tmp_name:
        tmp = Path(tmp_name)
        if args.postgres:
            from contextlib import AsyncExitStack

            async def run() -> dict[str, Any]:
                async with AsyncExitStack() as stack:
                    url = await _postgres_url(stack)
                    return await asyncio.to_thread(measure, args, url, tmp)

            payload = asyncio.run(run())
        else:
            payload = measure(args, f"sqlite+aiosqlite:///{tmp / DB_FILE}", tmp)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    path = save_results(NAME, payload)
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
