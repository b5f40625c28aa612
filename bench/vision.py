"""Vision overhead: from a WhatsApp photo webhook to the vision request leaving, and the memory
that 10 photos in flight cost (issue: "Benchmark bench/vision.py").

The service runs as it does in production, ``languagebuddy serve`` with its in-process worker,
in a process of its own (so its RSS is not mixed with this script's images), on SQLite in a temp
dir, pointed at a fake WhatsApp Cloud API and a fake OpenAI that run here on 127.0.0.1. Each
photo is a 12-megapixel (4000x3000) photo-like JPEG of about 3 MB hosted by the fake WhatsApp.

Both image rules run in one invocation, each against a fresh service: the old one (long side at
most ``image_max_side``, 2048) and the vision model's own rule that the service now follows (long
side at most 2048 and short side at most 768: the model scales to that itself, so larger pixels
are bytes and CPU for nothing). A table compares them side by side.

The photo-set window (``LB_PHOTO_SET_WINDOW_SECONDS``, 1.5 s by default) is set to 0 here: a
WhatsApp photo otherwise waits that long, by design, for the rest of a burst; this measures the
pipeline's own overhead, which the window adds to.

Overhead per photo = (time the fake OpenAI had received the whole chat request carrying the
image) - (time the signed webhook POST was sent): webhook ack, inbox claim, learner lookup,
media URL + download from the fake, checks, downscale, JPEG encode, base64, and the HTTP request
itself. Every vision request is checked: a data:image/jpeg;base64 part that decodes to a JPEG
within the rule of its run.

    .venv/bin/python bench/vision.py       # both rules: 30 photos one at a time, 3 bursts of 10
    .venv/bin/python bench/vision.py --photos 100 --bursts 5
    .venv/bin/python bench/vision.py --help

Peak RSS is the service's VmHWM, reset (``/proc/<pid>/clear_refs``) just before each burst of
10, cross-checked by sampling RSS every few ms; growth is against the RSS measured at rest after
warm-up and the sequential run. Targets: p50 overhead < 150 ms (one photo at a time), RSS
growth < 300 MB (10 in flight). The bursts' latencies are shown, without a target: 10 photos
of ~100 ms CPU each on a 2-core machine cannot all be ready in 150 ms.

The worker is in-process, woken by ``Inbox.on_put`` as soon as a webhook has stored its event
(no poll interval on this path; an idle slot otherwise polls with backoff up to 1 s).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from common import (
    Column,
    ServeProcess,
    cpu_seconds,
    percentile,
    print_table,
    reset_hwm,
    rss,
    save_results,
    vm_hwm,
)
from PIL import Image

from languagebuddy.config import Settings
from languagebuddy.media.images import prepare_image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the fakes live in tests/, which is not an installed package
    sys.path.insert(0, str(ROOT))

from tests.fakes.openai import FakeOpenAI, has_image  # noqa: E402
from tests.fakes.server import RecordedRequest  # noqa: E402
from tests.fakes.whatsapp import (  # noqa: E402
    FakeWhatsApp,
    whatsapp_headers,
    whatsapp_image_webhook,
    whatsapp_text_webhook,
)

NAME = "vision"
TARGET_P50_MS = 150.0
TARGET_RSS_GROWTH_MB = 300.0
MAX_SIDE = Settings.model_fields["image_max_side"].default  # 2048, LB_IMAGE_MAX_SIDE
SHORT_SIDE = Settings.model_fields["image_max_short_side"].default  # 768, the model's rule
# name -> LB_IMAGE_MAX_SHORT_SIDE (0: the long-side rule alone)
RULES = {"long<=2048": 0, "long<=2048,short<=768": SHORT_SIDE}
MB = 1024 * 1024
WAIT_S = 30.0  # per photo, before the run is declared broken

COLUMNS = [
    Column("rule", "rule", width=21),
    Column("run", "run", width=14),
    Column("metric", "metric", width=16),
    Column("n", "n", width=3),
    Column("value", "value", ".1f", width=7),
    Column("unit", "unit", width=4),
    Column("target", "target", width=8),
    Column("result", "result", width=6),
]

SPLIT_COLUMNS = [
    Column("stage", "stage (per photo)", width=44),
    Column("seq_p50", "seq p50", ".1f", width=7),
    Column("seq_p99", "seq p99", ".1f", width=7),
    Column("conc_p50", "burst p50", ".1f", width=7),
    Column("conc_p99", "burst p99", ".1f", width=7),
]


# --------------------------------------------------------------------------- the photo


def photo_jpeg(width: int = 4000, height: int = 3000, seed: int = 12, quality: int = 90) -> bytes:
    """A phone-like JPEG: the gradient + sensor noise of tests/unit/test_images.py ``photo()``,
    plus detail at several scales (mostly in luminance, as in real scenes), so that it
    compresses like a photo (about 3 MB at 4000x3000) and its downscale is not trivially small.
    Carries a small EXIF block (make, model, orientation 1) like a camera's."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1
    ).astype(np.float32)
    luminance = np.zeros((height, width), np.float32)
    for divisor, amplitude in ((64, 45.0), (16, 25.0), (4, 12.0)):
        coarse = rng.normal(0, amplitude, (height // divisor, width // divisor))
        layer = Image.fromarray(coarse.astype(np.float32), "F").resize(
            (width, height), Image.Resampling.BICUBIC
        )
        luminance += np.asarray(layer)
    pixels += luminance[..., None]
    chroma = rng.normal(0, 20, (height // 64, width // 64, 3)).astype(np.float32)
    for c in range(3):
        layer = Image.fromarray(chroma[..., c], "F").resize(
            (width, height), Image.Resampling.BICUBIC
        )
        pixels[..., c] += np.asarray(layer)
    pixels += rng.integers(-10, 10, pixels.shape).astype(np.float32)  # sensor noise
    im = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "Vision 12"  # Model
    exif[0x0112] = 1  # Orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def prepare_alone(data: bytes, repeats: int, max_side: int, short_side: int) -> list[float]:
    """``prepare_image`` on the same bytes in this process, ms: the decode/downscale/encode
    part of the media stage without the download (this process, one thread, idle service)."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        prepare_image(data, max_side=max_side, max_short_side=short_side or None)
        out.append((time.perf_counter() - start) * 1000)
    return out


# --------------------------------------------------------------------------- the service


DB_FILE = "lb.db"  # the service's SQLite database, in its work dir


def service_environment(
    tmp: Path, wa: FakeWhatsApp, ai: FakeOpenAI, concurrency: int, max_side: int, short_side: int
) -> dict[str, str]:
    """Settings of ``languagebuddy serve`` with its worker (see ``common.ServeProcess``)."""
    return {
        "LB_IMAGE_MAX_SHORT_SIDE": str(short_side),
        "LB_PHOTO_SET_WINDOW_SECONDS": "0",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / DB_FILE}",
        "OPENAI_API_KEY": ai.api_key,
        "OPENAI_BASE_URL": ai.base_url,
        "LB_OPENAI_MAX_RETRIES": "0",
        "LB_WORKER_CONCURRENCY": str(concurrency),
        "LB_IMAGE_MAX_SIDE": str(max_side),
        "LB_LOG_LEVEL": "info",
        "WHATSAPP_ACCESS_TOKEN": wa.access_token,
        "WHATSAPP_PHONE_NUMBER_ID": wa.phone_number_id,
        "WHATSAPP_APP_SECRET": wa.app_secret,
        "WHATSAPP_VERIFY_TOKEN": wa.verify_token,
        "WHATSAPP_API_BASE_URL": wa.base_url,
    }


def settings_used(service: ServeProcess) -> dict[str, str]:
    """The settings a result depends on, for the JSON."""
    return {
        k: v
        for k, v in service.env.items()
        if k.startswith("LB_") or k in ("DATABASE_URL", "OPENAI_BASE_URL")
    }


# --------------------------------------------------------------------------- memory


class RssSampler:
    """RSS of ``pid`` every ``interval`` seconds in a thread; ``peak`` and sample count."""

    def __init__(self, pid: int, interval: float) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(psutil.Error):
                self.peak = max(self.peak, int(self.process.memory_info().rss))
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def rss_at_rest(pid: int, settle: float = 1.0, window: float = 0.5) -> int:
    """RSS after ``settle`` idle seconds: the median of samples over ``window`` seconds."""
    time.sleep(settle)
    samples = []
    end = time.time() + window
    while time.time() < end:
        samples.append(rss(pid))
        time.sleep(0.01)
    return int(statistics.median(samples))


# --------------------------------------------------------------------------- one photo


@dataclass
class Shot:
    """One photo's journey; times are ``time.time()`` (one clock for both processes)."""

    tag: str
    wa_id: str
    message_id: str
    media_id: str
    sent: float = 0.0
    acked: float = 0.0
    status: int = 0
    media_info_at: float | None = None  # the worker asked the fake for the media URL
    download_at: float | None = None  # ... and then for the bytes at that URL
    vision: RecordedRequest | None = None
    timings: dict[str, float] = field(default_factory=dict)
    image: tuple[int, int] | None = None

    @property
    def overhead_ms(self) -> float:
        assert self.vision is not None
        return (self.vision.at - self.sent) * 1000

    def split(self) -> dict[str, float]:
        """Where the overhead went, ms. ``media`` and ``learner`` are the pipeline's own stage
        timings (turns.timings); the rest are arrival times at the fakes."""
        assert self.vision is not None and self.media_info_at is not None
        media = float(self.timings.get("media", float("nan")))
        fetch = (self.media_info_at - self.sent) * 1000
        media_url = (
            (self.download_at - self.media_info_at) * 1000 if self.download_at else float("nan")
        )
        return {
            "ack": (self.acked - self.sent) * 1000,
            "ack_to_fetch": fetch - (self.acked - self.sent) * 1000,
            "learner": float(self.timings.get("learner", float("nan"))),
            "media": media,
            "media_url": media_url,
            "download_prepare": media - media_url,
            "tutor_to_request": self.overhead_ms - fetch - media,
            "total": self.overhead_ms,
        }


_TAG_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


class Bench:
    def __init__(
        self, service: ServeProcess, wa: FakeWhatsApp, ai: FakeOpenAI, photo: bytes
    ) -> None:
        self.service = service
        self.db = service.workdir / DB_FILE
        self.wa = wa
        self.ai = ai
        self.photo = photo
        self.run = secrets.token_hex(3)
        self._matched: dict[str, RecordedRequest] = {}
        self._scanned = 0
        self._lock = threading.Lock()

    # -- sending -------------------------------------------------------------------------

    def new_shot(self, label: str, wa_id: str) -> Shot:
        tag = f"vb{self.run}{label}"  # letters and digits only: survives any JSON encoding
        media_id = self.wa.add_media(self.photo, "image/jpeg")
        message_id = "wamid.HBgN" + secrets.token_urlsafe(30)
        return Shot(tag=tag, wa_id=wa_id, message_id=message_id, media_id=media_id)

    def post(self, client: httpx.Client, shot: Shot) -> None:
        body = whatsapp_image_webhook(
            shot.media_id,
            caption=f"¿Qué ves en mi foto? {shot.tag}",
            wa_id=shot.wa_id,
            message_id=shot.message_id,
        )
        headers = whatsapp_headers(body, self.wa.app_secret)
        shot.sent = time.time()
        response = client.post(
            f"{self.service.base_url}/webhooks/whatsapp", content=body, headers=headers
        )
        shot.acked = time.time()
        shot.status = response.status_code
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")

    def text(self, client: httpx.Client, wa_id: str) -> str:
        message_id = "wamid.HBgN" + secrets.token_urlsafe(30)
        body = whatsapp_text_webhook("Hola, quiero practicar.", wa_id=wa_id, message_id=message_id)
        response = client.post(
            f"{self.service.base_url}/webhooks/whatsapp",
            content=body,
            headers=whatsapp_headers(body, self.wa.app_secret),
        )
        response.raise_for_status()
        return message_id

    # -- waiting -------------------------------------------------------------------------

    def _scan(self) -> None:
        """Index new chat requests by the tag in their text (each scanned once)."""
        with self._lock:
            requests = self.ai.requests("/v1/chat/completions")
            for record in requests[self._scanned :]:
                if b'"image_url"' not in record.body:
                    continue  # a summary or text turn: earlier captions are in its history
                # The last one: earlier photos' captions are in the history before it.
                start = record.body.rfind(f"vb{self.run}".encode())
                if start < 0:
                    continue
                end = start
                while end < len(record.body) and chr(record.body[end]) in _TAG_CHARS:
                    end += 1
                self._matched.setdefault(record.body[start:end].decode(), record)
            self._scanned = len(requests)

    def wait_done(self, shots: Sequence[Shot], timeout: float = WAIT_S) -> None:
        """Until each shot's vision request arrived and its inbox item is done (the turn with
        its stage timings stored, the reply sent)."""
        deadline = time.time() + timeout
        pending = [s for s in shots]
        while pending:
            self._scan()
            for shot in [s for s in pending if s.vision is None]:
                shot.vision = self._matched.get(shot.tag)
            ready = [s for s in pending if s.vision is not None]
            if ready:
                self._read_turns(ready)
            pending = [s for s in pending if s.vision is None or not s.timings]
            if not pending:
                break
            if time.time() > deadline:
                self.service.alive()
                raise RuntimeError(
                    f"{len(pending)} photo(s) not processed in {timeout:.0f} s: "
                    f"{[s.tag for s in pending][:3]}\n{self.service.log_tail()}"
                )
            time.sleep(0.01)
        for shot in shots:
            info = self.wa.server.recorded(f"/{shot.media_id}", method="GET")
            if not info:
                raise RuntimeError(f"{shot.tag}: the media URL was never asked for")
            shot.media_info_at = info[0].at
            fetched = [
                r
                for r in self.wa.server.recorded("/whatsapp_business/attachments/", method="GET")
                if f"mid={shot.media_id}" in r.query
            ]
            shot.download_at = fetched[0].at if fetched else None

    def _read_turns(self, shots: Sequence[Shot]) -> None:
        ids = {s.message_id: s for s in shots if not s.timings}
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
                # Done, not only composed: the reply has gone out too, so the next photo does
                # not overlap this one's tail.
                rows = conn.execute(
                    "SELECT t.provider_message_id, t.timings FROM turns t "
                    "JOIN inbox i ON i.id = t.inbox_item_id "
                    f"WHERE t.direction = 'in' AND i.status = 'done' "
                    f"AND t.provider_message_id IN ({marks})",
                    list(ids),
                ).fetchall()
        except sqlite3.OperationalError:  # busy for a moment: try on the next poll
            return
        for message_id, timings in rows:
            if timings:
                ids[message_id].timings = json.loads(timings)

    def wait_texts(self, message_ids: Sequence[str], timeout: float = WAIT_S) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
                marks = ",".join("?" * len(message_ids))
                done = conn.execute(
                    f"SELECT count(*) FROM inbox WHERE status = 'done' AND dedupe_key IN ({marks})",
                    [f"whatsapp:{m}" for m in message_ids],
                ).fetchone()[0]
            if done == len(message_ids):
                return
            time.sleep(0.02)
        raise RuntimeError(f"warm-up texts not processed:\n{self.service.log_tail()}")

    # -- runs ----------------------------------------------------------------------------

    def sequential(self, count: int, learners: Sequence[str], label: str) -> list[Shot]:
        """One photo at a time; the next webhook only after the previous turn is stored."""
        shots = []
        with httpx.Client(timeout=30) as client:
            for i in range(count):
                shot = self.new_shot(f"{label}{i:04d}", learners[i % len(learners)])
                self.post(client, shot)
                self.wait_done([shot])
                shots.append(shot)
        return shots

    def burst(self, learners: Sequence[str], label: str) -> list[Shot]:
        """One webhook per learner, all released at the same instant from their own threads
        (and connections), so all the photos are in flight together."""
        shots = [self.new_shot(f"{label}n{n:04d}", wa_id) for n, wa_id in enumerate(learners)]
        clients = [httpx.Client(timeout=30) for _ in shots]
        for client in clients:  # connect first, so the burst is not a burst of TCP handshakes
            client.get(f"{self.service.base_url}/healthz")
        gate = threading.Barrier(len(shots))
        errors: list[BaseException] = []

        def fire(client: httpx.Client, shot: Shot) -> None:
            try:
                gate.wait(timeout=10)
                self.post(client, shot)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=fire, args=(c, s), daemon=True)
            for c, s in zip(clients, shots, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        for client in clients:
            client.close()
        if errors:
            raise errors[0]
        self.wait_done(shots)
        return shots


# --------------------------------------------------------------------------- checks


def check_vision(shot: Shot, max_side: int, short_side: int) -> tuple[int, int]:
    """The request is a vision request with one data:image/jpeg;base64 JPEG within the rule."""
    assert shot.vision is not None
    body = shot.vision.json()
    if not has_image(body):
        raise RuntimeError(f"{shot.tag}: the chat request carries no image_url part")
    last = body["messages"][-1]
    if last.get("role") != "user" or shot.tag not in json.dumps(last.get("content")):
        raise RuntimeError(f"{shot.tag}: matched a request that is not this photo's")
    urls = [
        part["image_url"]["url"]
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]
    if len(urls) != 1 or not urls[0].startswith("data:image/jpeg;base64,"):
        raise RuntimeError(f"{shot.tag}: expected one data:image/jpeg;base64 URL, got {urls!r:.80}")
    jpeg = base64.b64decode(urls[0].split(",", 1)[1], validate=True)
    with Image.open(io.BytesIO(jpeg)) as im:
        if im.format != "JPEG":
            raise RuntimeError(f"{shot.tag}: the image is {im.format}, not JPEG")
        if max(im.size) > max_side:
            raise RuntimeError(f"{shot.tag}: {im.size} is over {max_side} px on its long side")
        if short_side and min(im.size) > short_side:
            raise RuntimeError(f"{shot.tag}: {im.size} is over {short_side} px on its short side")
        im.load()  # the whole JPEG decodes
        if im.getexif():
            raise RuntimeError(f"{shot.tag}: EXIF reached the model")
        return im.size


# --------------------------------------------------------------------------- report


def _ms(values: Sequence[float]) -> tuple[float, float, float]:
    return percentile(values, 50), percentile(values, 99), max(values)


def result_rows(
    seq: Sequence[Shot], bursts: Sequence[dict[str, Any]], baseline: int, cpu_ms: dict[str, float]
) -> list[dict[str, Any]]:
    """The summary; "service CPU/photo" is the service process's user + system time per photo
    for the whole turn (reply included): what the latency would be on an idle core."""
    rows: list[dict[str, Any]] = []
    if seq:
        p50, p99, worst = _ms([s.overhead_ms for s in seq])
        rows += [
            _row("sequential", "overhead p50", len(seq), p50, "ms", TARGET_P50_MS),
            _row("sequential", "overhead p99", len(seq), p99, "ms"),
            _row("sequential", "overhead max", len(seq), worst, "ms"),
            _row("sequential", "service CPU/photo", len(seq), cpu_ms["seq"], "ms"),
        ]
    if bursts:
        shots = [s for b in bursts for s in b["shots"]]
        p50, p99, worst = _ms([s.overhead_ms for s in shots])
        label = f"{len(bursts[0]['shots'])} in flight"
        peak = max(b["peak"] for b in bursts)
        growth = (peak - baseline) / MB
        rows += [
            _row(label, "overhead p50", len(shots), p50, "ms"),
            _row(label, "overhead p99", len(shots), p99, "ms"),
            _row(label, "overhead max", len(shots), worst, "ms"),
            _row(label, "service CPU/photo", len(shots), cpu_ms["conc"], "ms"),
            _row(label, "RSS baseline", None, baseline / MB, "MB"),
            _row(label, "RSS peak", len(bursts), peak / MB, "MB"),
            _row(label, "RSS growth", len(bursts), growth, "MB", TARGET_RSS_GROWTH_MB),
        ]
    return rows


def _row(
    run: str, metric: str, n: int | None, value: float, unit: str, target: float | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run, "metric": metric, "n": n, "value": value, "unit": unit}
    if target is not None:
        row["target"] = f"< {target:g}"
        row["result"] = "PASS" if value < target else "FAIL"
    return row


STAGES = [
    ("ack", "webhook POST -> 200 (verify, parse, inbox put)"),
    ("ack_to_fetch", "200 -> media URL asked (wake, claim, learner)"),
    ("learner", "  of which learner lookup (stage timing)"),
    ("media", "media stage (stage timing), of which:"),
    ("media_url", "  GET /{media-id} -> GET of the URL arrives"),
    ("download_prepare", "  download, checks, downscale, encode"),
    ("download_alone", "    ref: download alone, bench -> fake"),
    ("prepare_alone", "    ref: prepare_image alone, bench process"),
    ("tutor_to_request", "media done -> request received (prompt, b64)"),
    ("total", "total overhead"),
]


def split_rows(
    seq: Sequence[Shot], conc: Sequence[Shot], references: dict[str, list[float]]
) -> list[dict[str, Any]]:
    """Per stage p50/p99; the ``ref`` rows are measured alone in this process, for scale."""
    splits = {"seq": [s.split() for s in seq], "conc": [s.split() for s in conc]}
    rows = []
    for key, title in STAGES:
        row: dict[str, Any] = {"stage": title, "key": key}
        for run, items in splits.items():
            if key in references:
                values = references[key] if run == "seq" else []
            else:
                values = [d[key] for d in items]
            row[f"{run}_p50"] = percentile(values, 50)
            row[f"{run}_p99"] = percentile(values, 99)
        rows.append(row)
    return rows


def download_alone(wa: FakeWhatsApp, photo: bytes, repeats: int) -> list[float]:
    """GET the photo from the fake as the channel does (stream, chunks, join), ms."""
    media_id = wa.add_media(photo, "image/jpeg")
    headers = {"Authorization": f"Bearer {wa.access_token}"}
    out = []
    with httpx.Client(timeout=30, headers=headers) as client:
        url = client.get(f"{wa.base_url}/{media_id}").json()["url"]
        for _ in range(repeats + 1):
            start = time.perf_counter()
            with client.stream("GET", url) as response:
                data = b"".join(response.iter_bytes())
            out.append((time.perf_counter() - start) * 1000)
            if data != photo:
                raise RuntimeError("the fake served other bytes")
    return out[1:]  # the first one opens the connection


def shot_record(shot: Shot) -> dict[str, Any]:
    return {
        "tag": shot.tag,
        "learner": shot.wa_id,
        "overhead_ms": round(shot.overhead_ms, 2),
        "split_ms": {k: round(v, 2) for k, v in shot.split().items()},
        "stage_timings_ms": shot.timings,
        "request_bytes": len(shot.vision.body) if shot.vision else None,
        "image": shot.image,
    }


# --------------------------------------------------------------------------- main


@contextmanager
def stack(
    args: argparse.Namespace, short_side: int
) -> Iterator[tuple[ServeProcess, FakeWhatsApp, FakeOpenAI]]:
    with (
        tempfile.TemporaryDirectory(prefix="lb_bench_vision_") as tmp,
        FakeWhatsApp() as wa,
        FakeOpenAI() as ai,
    ):
        env = service_environment(
            Path(tmp), wa, ai, args.worker_concurrency, args.image_max_side, short_side
        )
        with ServeProcess(Path(tmp), env) as service:
            yield service, wa, ai


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--photos", type=int, default=30, help="sequential photos, one at a time (default 30)"
    )
    parser.add_argument(
        "--in-flight", type=int, default=10, help="photos in flight together (default 10)"
    )
    parser.add_argument(
        "--bursts", type=int, default=3, help="bursts of --in-flight photos (default 3; 0 skips)"
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=None,
        help="LB_WORKER_CONCURRENCY of the service (default: --in-flight, at least 10)",
    )
    parser.add_argument(
        "--warm-up", type=int, default=3, help="photos before measuring (default 3)"
    )
    parser.add_argument(
        "--sample-ms", type=float, default=5.0, help="RSS sampling period in ms (default 5)"
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the photo")
    parser.add_argument(
        "--image-max-side",
        type=int,
        default=MAX_SIDE,
        help=f"LB_IMAGE_MAX_SIDE of the service (default {MAX_SIDE}, the service's default)",
    )
    parser.add_argument(
        "--rule",
        choices=[*RULES, "both"],
        default="both",
        help="the image rule(s) to measure (default both, one after the other)",
    )
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    if args.photos < 1 or args.in_flight < 1 or args.bursts < 0 or args.warm_up < 0:
        parser.error("--photos and --in-flight must be >= 1, --bursts and --warm-up >= 0")
    if args.worker_concurrency is None:
        args.worker_concurrency = max(args.in_flight, 10)
    if args.worker_concurrency < args.in_flight:
        parser.error("--worker-concurrency below --in-flight would queue photos, not fly them")
    return args


@dataclass
class RuleRun:
    """One image rule measured on its own service."""

    rule: str
    short_side: int
    rows: list[dict[str, Any]]
    splits: list[dict[str, Any]]
    references: dict[str, list[float]]
    sizes: list[tuple[int, int]]
    request_kib: float
    record: dict[str, Any]


def measure(args: argparse.Namespace, photo: bytes, rule: str, short_side: int) -> RuleRun:
    """The whole measurement for one rule: warm-up, the sequential run, the bursts."""
    print(f"\n== rule {rule} (LB_IMAGE_MAX_SHORT_SIDE={short_side})", flush=True)
    prepare_ms = prepare_alone(photo, 5, args.image_max_side, short_side)
    learners = [f"3460000{n:04d}" for n in range(args.in_flight)]

    with stack(args, short_side) as (service, wa, ai):
        bench = Bench(service, wa, ai, photo)
        download_ms = download_alone(wa, photo, 5)
        rss_started = rss(service.pid)
        # Warm-up: every learner exists (a text each, all slots and DB connections used once),
        # then a few photos so Pillow, the thread pool and the HTTP pools are warm.
        with httpx.Client(timeout=30) as client:
            bench.wait_texts([bench.text(client, wa_id) for wa_id in learners])
        warm = bench.sequential(args.warm_up, learners, "w")
        rss_warm = rss(service.pid)
        print(
            f"service pid {service.pid}: RSS {rss_started / MB:.0f} MB at start, "
            f"{rss_warm / MB:.0f} MB after warm-up ({len(warm)} photos)",
            flush=True,
        )

        cpu_start = cpu_seconds(service.pid)
        seq = bench.sequential(args.photos, learners, "s")
        cpu_seq = (cpu_seconds(service.pid) - cpu_start) / len(seq)
        cpu_conc = 0.0
        baseline = rss_at_rest(service.pid)
        bursts: list[dict[str, Any]] = []
        for b in range(args.bursts):
            before = rss_at_rest(service.pid, settle=0.5, window=0.2) if b else baseline
            hwm_reset = reset_hwm(service.pid)
            cpu_start = cpu_seconds(service.pid)
            with RssSampler(service.pid, args.sample_ms / 1000) as sampler:
                shots = bench.burst(learners, f"c{b}")
                time.sleep(0.05)  # the replies' tail
            cpu_conc += cpu_seconds(service.pid) - cpu_start
            hwm = vm_hwm(service.pid) if hwm_reset else None
            peak = max(sampler.peak, hwm or 0)
            bursts.append(
                {
                    "shots": shots,
                    "rss_before": before,
                    "peak": peak,
                    "peak_sampled": sampler.peak,
                    "peak_vm_hwm": hwm,
                    "samples": sampler.samples,
                }
            )
        service.alive()
        rss_end = rss_at_rest(service.pid)

        # Nothing measured a broken path: every request carried the downscaled JPEG.
        for shot in [*warm, *seq, *(s for b in bursts for s in b["shots"])]:
            shot.image = check_vision(shot, args.image_max_side, short_side)
        settings = settings_used(service)

    conc = [s for b in bursts for s in b["shots"]]
    cpu_ms = {"seq": cpu_seq * 1000, "conc": cpu_conc * 1000 / max(1, len(conc))}
    rows = [{"rule": rule, **row} for row in result_rows(seq, bursts, baseline, cpu_ms)]
    references = {"prepare_alone": prepare_ms, "download_alone": download_ms}
    splits = split_rows(seq, conc, references)
    sizes = sorted({s.image for s in seq if s.image})
    request_kib = statistics.median(len(s.vision.body) for s in seq if s.vision) / 1024
    peaks = [(b["peak_vm_hwm"] or 0, b["peak_sampled"]) for b in bursts]
    record = {
        "service": settings | {"worker_wake": "in-process: Inbox.on_put wakes idle slots at once"},
        "rows": rows,
        "split_ms": [{k: v for k, v in r.items() if k != "stage"} for r in splits],
        "reference_ms": references,
        "image_sent": sizes,
        "request_kib_p50": request_kib,
        "rss": {
            "at_start": rss_started,
            "after_warm_up": rss_warm,
            "baseline": baseline,
            "after_bursts": rss_end,
            "bursts": [{k: v for k, v in b.items() if k != "shots"} for b in bursts],
            "peaks_vm_hwm_sampled": peaks,
        },
        "sequential": [shot_record(s) for s in seq],
        "concurrent": [shot_record(s) for s in conc],
    }
    return RuleRun(rule, short_side, rows, splits, references, sizes, request_kib, record)


COMPARE_COLUMNS = [
    Column("metric", "per photo (sequential p50 unless said)", width=40),
    Column("old", "long<=2048", ".1f", width=10),
    Column("new", "+short<=768", ".1f", width=11),
    Column("ratio", "new/old", ".2f", width=7),
]


def comparison(old: RuleRun, new: RuleRun) -> list[dict[str, Any]]:
    """The two rules side by side; the old rule is the reference of each ratio."""

    def value(run: RuleRun, run_name: str, metric: str) -> float:
        for row in run.rows:
            if row["run"] == run_name and row["metric"] == metric:
                return float(row["value"])
        return float("nan")

    def split(run: RuleRun, key: str) -> float:
        return float(next(r["seq_p50"] for r in run.splits if r["key"] == key))

    burst = next((r["run"] for r in old.rows if r["run"] != "sequential"), "")
    pairs = [
        ("pixels sent (thousands)", *(r.sizes[0][0] * r.sizes[0][1] / 1000 for r in (old, new))),
        ("vision request body, KiB", old.request_kib, new.request_kib),
        (
            "overhead p50, ms",
            value(old, "sequential", "overhead p50"),
            value(new, "sequential", "overhead p50"),
        ),
        (
            "overhead p99, ms",
            value(old, "sequential", "overhead p99"),
            value(new, "sequential", "overhead p99"),
        ),
        (
            "download, checks, downscale, encode, ms",
            split(old, "download_prepare"),
            split(new, "download_prepare"),
        ),
        (
            "prepare_image alone (bench process), ms",
            split(old, "prepare_alone"),
            split(new, "prepare_alone"),
        ),
        (
            "service CPU per photo, ms",
            value(old, "sequential", "service CPU/photo"),
            value(new, "sequential", "service CPU/photo"),
        ),
        (
            f"{burst}: overhead p50, ms",
            value(old, burst, "overhead p50"),
            value(new, burst, "overhead p50"),
        ),
        (
            f"{burst}: RSS growth, MB",
            value(old, burst, "RSS growth"),
            value(new, burst, "RSS growth"),
        ),
    ]
    return [
        {"metric": name, "old": a, "new": b, "ratio": (b / a) if a else float("nan")}
        for name, a, b in pairs
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loadavg_start = list(os.getloadavg())
    photo = photo_jpeg(quality=args.quality)
    with Image.open(io.BytesIO(photo)) as im:
        photo_info = {"width": im.width, "height": im.height, "bytes": len(photo)}
    print(
        f"photo: {photo_info['width']}x{photo_info['height']} JPEG q{args.quality}, "
        f"{len(photo) / MB:.2f} MB",
        flush=True,
    )
    rules = RULES if args.rule == "both" else {args.rule: RULES[args.rule]}
    runs = [measure(args, photo, rule, short) for rule, short in rules.items()]

    wall = time.perf_counter() - started
    print()
    print_table([row for run in runs for row in run.rows], COLUMNS)
    for run in runs:
        print(f"\nrule {run.rule}: where the overhead went")
        print_table(run.splits, SPLIT_COLUMNS)
        sent = ", ".join(f"{w}x{h}" for w, h in run.sizes)
        print(f"vision image sent: {sent} JPEG, request body {run.request_kib:.0f} KiB")
    compared = comparison(runs[0], runs[1]) if len(runs) == 2 else []
    if compared:
        print("\nthe two rules side by side (the old rule is the reference)")
        print_table(compared, COMPARE_COLUMNS)
    load = os.getloadavg()[0]
    print(
        f"\nload average (1 min): {loadavg_start[0]:.2f} at start, {load:.2f} at end, "
        f"{os.cpu_count()} CPUs; {wall:.0f} s in all"
    )

    if not args.no_save:
        path = save_results(
            NAME,
            {
                "parameters": {k: v for k, v in vars(args).items() if k != "no_save"},
                "photo": photo_info,
                "loadavg_at_start": loadavg_start,
                "target": {"p50_ms": TARGET_P50_MS, "rss_growth_mb": TARGET_RSS_GROWTH_MB},
                "rules": {run.rule: run.record for run in runs},
                "comparison": compared,
                "seconds": wall,
            },
        )
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"\nsaved {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
