"""Live calls: N simultaneous phone calls through the real ``languagebuddy serve``, the caller
and the model faked in processes of their own, both paced at real time.

Each call rings through the provider's fake (Call Control webhook, answer, media stream), the
model greets it, then every 3.5 s the caller speaks for 1.2 s: the model answers each turn
(~2.9 s of audio) and the next turn interrupts it (a barge-in per turn). Per level of
concurrency (default 10, 50, 100, 200) and in the same run, the same traffic goes through
``naive_relay.py``, the floor of the straightforward design, so the ratio compares across
machines. Measured over a steady window (after the ramp, before the hang-ups):

* ``cpu ms/call-s``: the server process's CPU time (user + system) per second of call;
* ``rss/call``: resident memory over the idle process, per call;
* ``in p50/p99``: added latency per caller frame, sent by the caller -> appended at the model;
* ``out p50/p99``: per model delta, sent by the model -> its first byte at the caller;
* ``underruns``: the caller's playout ran dry mid-utterance (a gap under 250 ms);
* ``barge p50/p99``: ``speech_started`` sent by the model -> ``clear`` at the caller;
* the load average of the machine at the end of each window.

``--profile N`` adds a py-spy profile of the server at N calls (where its CPU goes), saved in
the JSON. Results: ``bench/results/calls-<provider>-<timestamp>.json``.

    .venv/bin/python bench/calls.py --provider telnyx                   # ~8 min
    .venv/bin/python bench/calls.py --provider telnyx --calls 50 --seconds 15 --no-naive

A provider is a ``Provider`` entry below: how its fake runs calls (``caller_main``), the
settings that point the service at it and how its audio is matched. Vonage (``--provider
vonage``): the same traffic as L16 16 kHz, resampled both ways by the service and by the naive
relay; a caller frame is matched to its append by recomputing that system's uplink; the
outbound latency is per answer (first delta -> first frame at the caller), since the service
paces frames at most 100 ms ahead on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from common import Column, ServeProcess, free_port, percentile, print_table, save_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fakes, for the child processes too

TURN_EVERY = 3.5
TURN_SECONDS = 1.2


# --------------------------------------------------------------------------- child: the model


def model_main(conn: Any) -> None:
    """The fake Realtime API in its own process (served by the lighter ``websockets`` server,
    same session logic as the tests'); answers "collect" with what it saw."""
    import threading

    from tests.fakes.openai_realtime import FakeRealtime, serve_lightweight

    realtime = FakeRealtime("sk-bench-key", keep_audio=False, record_timing=True)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = asyncio.run_coroutine_threadsafe(serve_lightweight(realtime), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    conn.send((f"http://127.0.0.1:{port}/v1", realtime.api_key))
    while True:
        command = conn.recv()
        if command[0] == "collect":
            key = command[1]  # keep only the head of each append (Vonage's are 1,280 chars)
            sessions = realtime.sessions
            conn.send(
                [
                    {
                        "appends": [(t, p[:key] if key else p) for t, p in s.append_times],
                        "deltas": [
                            (t, item, chunk[:24], len(chunk)) for t, item, chunk in s.deltas_sent
                        ],
                        "speech_started": s.speech_started_at,
                        "errors": [e.get("code") for e in s.errors_sent],
                    }
                    for s in sessions
                ]
            )
            realtime.reset()
        elif command[0] == "stop":
            loop.call_soon_threadsafe(server.close)
            return


# --------------------------------------------------------------------------- child: Telnyx


def _serve_commands(conn: Any, fake: Any, calls: Callable[..., Any]) -> None:
    """A fake carrier's process: report its settings, then "run" drives N calls through
    ``calls`` and returns what they recorded, until "stop"."""
    conn.send(fake.settings())
    while True:
        command = conn.recv()
        if command[0] == "stop":
            fake.stop()
            return
        _, n, seconds, ramp, target = command
        conn.send(fake.run(calls(fake, n, seconds, ramp, target), timeout=seconds + 300))


def telnyx_caller_main(conn: Any) -> None:
    """The fake Telnyx and its callers."""
    from tests.fakes.telnyx import FakeTelnyx

    _serve_commands(conn, FakeTelnyx().start(), _telnyx_calls)


async def _telnyx_calls(fake: Any, n: int, seconds: float, ramp: float, target: dict[str, str]):
    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(ramp * i / n)
        if target["mode"] == "direct":
            call = await fake.connect_direct(target["url"])
        else:
            fake.webhook_url = target["url"]
            call = await fake.ring(f"+3460{i:07d}")
        for _ in range(1000):
            if call.caller is not None and call.streaming and call.streaming.is_set():
                break
            await asyncio.sleep(0.02)
        caller = call.caller
        if caller is None:
            return {"failed": call.stream_error or "never streamed"}
        caller.record_frames = True
        caller.record_audio = False
        await _converse(caller, seconds)
        if target["mode"] == "direct":
            await caller.stop()
        else:
            await fake.end(call)
        return {
            "frames": caller.sent_frames,
            "media": caller.media_times,
            "received": bytes(caller.received),
            "clears": [c["at"] for c in caller.clears],
            "underruns": caller.underrun_events,
            "marks": len(caller.marks_received),
            "media_messages": caller.media_messages,
        }

    results = await asyncio.gather(*(one(i) for i in range(n)))
    fake.calls.clear()
    return results


async def _converse(caller: Any, seconds: float) -> None:
    """The caller speaks for TURN_SECONDS every TURN_EVERY seconds until the call's end."""
    started = time.monotonic()
    turn = 1
    while (left := started + seconds - time.monotonic()) > 0:
        wait = started + turn * TURN_EVERY - time.monotonic()
        if wait > left:
            await asyncio.sleep(left)
            break
        await asyncio.sleep(max(0.0, wait))
        caller.say(TURN_SECONDS)
        turn += 1


# --------------------------------------------------------------------------- child: Vonage

APPEND_KEY = 44  # base64 chars: the first 33 bytes (16 samples) of an append name its frame


def vonage_caller_main(conn: Any) -> None:
    """The fake Vonage and its callers (every frame recorded from the first, so that the
    resampling of each can be recomputed here and matched with the model's appends)."""
    from tests.fakes.vonage import FakeVonage

    _serve_commands(conn, FakeVonage(record_frames=True).start(), _vonage_calls)


async def _vonage_calls(fake: Any, n: int, seconds: float, ramp: float, target: dict[str, str]):
    from naive_relay import NaiveResampler

    from languagebuddy.media.resample import Uplink
    from tests.fakes.vonage import FakeCaller

    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(ramp * i / n)
        number = f"+4477{i:07d}"
        run = None
        if target["mode"] == "direct":
            call = fake.live_call(number)
            call.caller = FakeCaller(call, seed=(i + 1) * 100)
            call.caller.record_frames, call.caller.record_audio = True, False
            headers = {"call_uuid": call.uuid}
            run = asyncio.ensure_future(
                call.caller.run(target["url"], headers, "audio/l16;rate=16000")
            )
        else:
            fake.answer_url, fake.event_url = target["url"], target["events"]
            call = await fake.ring(number)
        for _ in range(1000):
            if call.caller is not None and call.caller.connected.is_set():
                break
            await asyncio.sleep(0.02)
        caller = call.caller
        if caller is None or not caller.connected.is_set():
            return {"failed": call.stream_error or "never connected"}
        await _converse(caller, seconds)
        if run is not None:
            await caller.close()
            await run
        else:
            await fake._end(call, "completed")
        # What each frame became at the model: the system's own uplink, recomputed.
        resample = Uplink().push if target["mode"] == "webhook" else NaiveResampler(16000, 24000)
        frames: list[tuple[float, str]] = []
        waiting: list[float] = []  # frames the resampler has not answered yet
        for t, frame in caller.sent_frames:
            waiting.append(t)
            audio = resample(frame)
            if audio:
                key = base64.b64encode(audio[:33]).decode()
                frames += [(sent, key) for sent in waiting]
                waiting.clear()
        caller.sent_frames.clear()
        return {
            "frames": frames,
            "arrivals": [t for t, _, _ in caller.frame_times],
            "clears": [c["at"] for c in caller.clears],
            "underruns": caller.playout.underrun_events,
            "marks": len(caller.notifies),
            "media_messages": caller.frames_received,
            "bad_frames": len(caller.bad_frames),
            "max_buffered_ms": caller.playout.max_buffered_ms,
        }

    results = await asyncio.gather(*(one(i) for i in range(n)))
    fake.calls.clear()
    return results


@dataclass(frozen=True)
class Provider:
    name: str
    caller_main: Callable[[Any], None]
    # Settings of the service for this provider's fake (from what the fake reported).
    serve_env: Callable[[dict[str, str]], dict[str, str]]
    webhook_path: str  # where the fake delivers call webhooks on the service
    naive_path: str  # the naive relay's route for this provider
    # Outbound latency: "delta" = each model delta to its first byte at the caller (audio
    # passed through); "answer" = each answer's first delta to its first frame at the caller
    # (resampled and paced audio: later frames are held on purpose, a lead the caller's
    # buffer absorbs; underruns say whether it was enough).
    outbound: str = "delta"
    events_path: str | None = None
    append_key: int = 0  # 0: appends are matched whole


PROVIDERS = {
    "telnyx": Provider(
        name="telnyx",
        caller_main=telnyx_caller_main,
        serve_env=lambda s: {
            "TELNYX_API_KEY": s["telnyx_api_key"],
            "TELNYX_PUBLIC_KEY": s["telnyx_public_key"],
            "TELNYX_API_BASE_URL": s["telnyx_api_base_url"],
        },
        webhook_path="/calls/telnyx/webhook",
        naive_path="/relay",
    ),
    "vonage": Provider(
        name="vonage",
        caller_main=vonage_caller_main,
        serve_env=lambda s: {
            "VONAGE_APPLICATION_ID": s["vonage_application_id"],
            "VONAGE_PRIVATE_KEY_PATH": s["vonage_private_key_path"],
            "VONAGE_SIGNATURE_SECRET": s["vonage_signature_secret"],
            "VONAGE_API_BASE_URL": s["vonage_api_base_url"],
        },
        webhook_path="/calls/vonage/answer",
        events_path="/calls/vonage/events",
        naive_path="/relay-vonage",
        outbound="answer",
        append_key=APPEND_KEY,
    ),
}


# --------------------------------------------------------------------------- analysis


def _analyse(
    calls: list[dict[str, Any]],
    sessions: list[dict[str, Any]],
    window: tuple[float, float],
    *,
    outbound_latency: str = "delta",
):
    start, end = window
    # A frame's audio reaches the model in the append named by its key; a resampler that
    # returned nothing for a frame hands its audio over with a later one (same key): those
    # frames wait for it, and ``in_held`` counts them.
    sent_at: dict[str, list[tuple[float, int]]] = {}
    for index, call in enumerate(calls):
        for t, payload in call.get("frames", []):
            sent_at.setdefault(payload, []).append((t, index))
    inbound: list[float] = []
    transport: list[float] = []  # from the frame that produced the append: no resampler wait
    held = 0
    outbound: list[float] = []
    barge: list[float] = []
    session_call: dict[int, int] = {}
    for number, session in enumerate(sessions):
        for t, payload in session["appends"]:
            frames = sent_at.get(payload)
            if frames is None:
                continue
            session_call.setdefault(number, frames[-1][1])
            for sent, _ in frames:
                if start <= sent <= end:
                    inbound.append((t - sent) * 1000)
            if start <= frames[-1][0] <= end:
                transport.append((t - frames[-1][0]) * 1000)
                held += len(frames) - 1
    for number, index in session_call.items():
        call, session = calls[index], sessions[number]
        if outbound_latency == "answer":
            outbound += _answer_latencies(call["arrivals"], session["deltas"], window)
        else:
            outbound += _delta_latencies(call, session["deltas"], window)
        started = sorted(session["speech_started"])
        for clear in call["clears"]:
            before = bisect.bisect_right(started, clear) - 1
            if before >= 0 and start <= clear <= end:
                barge.append((clear - started[before]) * 1000)
    underruns = sum(1 for call in calls for t, _ in call.get("underruns", []) if start <= t <= end)
    errors = Counter(code for s in sessions for code in s["errors"])
    return {
        "in_p50": percentile(inbound, 50),
        "in_p99": percentile(inbound, 99),
        "in_transport_p99": percentile(transport, 99),
        "in_held_share": held / len(inbound) if inbound else None,
        "out_p50": percentile(outbound, 50),
        "out_p99": percentile(outbound, 99),
        "barge_p50": percentile(barge, 50),
        "barge_p99": percentile(barge, 99),
        "barge_ins": len(barge),
        "underruns": underruns,
        "frames_matched": len(inbound),
        "deltas_matched": len(outbound),
        "model_errors": dict(errors),
        "failed_calls": sum(1 for c in calls if "failed" in c),
        # The deepest the caller's playout buffer got (Vonage: what a barge-in's clear drops).
        "caller_buffer_max_ms": max((c.get("max_buffered_ms") or 0.0 for c in calls), default=0.0)
        or None,
    }


def _delta_latencies(
    call: dict[str, Any], deltas: list[tuple[Any, ...]], window: tuple[float, float]
) -> list[float]:
    """Each model delta found in what the caller received (audio passed through untouched):
    from sent by the model to the arrival of the carrier message that holds its first byte."""
    received = call["received"]
    media = call["media"]
    offsets = [offset for _, offset in media]
    latencies = []
    cursor = 0
    for t, _item, head, *_ in deltas:
        at = received.find(head, cursor)
        if at < 0:
            continue  # dropped by a barge-in before it was forwarded
        cursor = at + 1
        if not window[0] <= t <= window[1]:
            continue
        message = bisect.bisect_right(offsets, at) - 1
        if message >= 0:
            latencies.append((media[message][0] - t) * 1000)
    return latencies


def _answer_latencies(
    arrivals: list[float], deltas: list[tuple[Any, ...]], window: tuple[float, float]
) -> list[float]:
    """Each answer's first delta (sent by the model) to the first audio frame that reached
    the caller after it: the delay the caller hears at the start of every answer."""
    firsts: dict[str, float] = {}
    for t, item, *_ in deltas:
        firsts.setdefault(item, t)
    latencies = []
    for t in firsts.values():
        if not window[0] <= t <= window[1]:
            continue
        k = bisect.bisect_left(arrivals, t)
        if k < len(arrivals) and arrivals[k] - t < 1.0:
            latencies.append((arrivals[k] - t) * 1000)
    return latencies


# --------------------------------------------------------------------------- driver


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.provider = PROVIDERS[args.provider]
        ctx = mp.get_context("spawn")
        self.model_conn, child = ctx.Pipe()
        self.model = ctx.Process(target=model_main, args=(child,), daemon=True)
        self.model.start()
        self.model_url, api_key = self.model_conn.recv()
        self.caller_conn, child = ctx.Pipe()
        self.callers = ctx.Process(target=self.provider.caller_main, args=(child,), daemon=True)
        self.callers.start()
        fake_settings = self.caller_conn.recv()
        env = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'lb.db'}",
            "OPENAI_API_KEY": api_key,
            "OPENAI_BASE_URL": self.model_url,
            "LB_LOG_LEVEL": "warning",
            "LB_CALL_MAX_SECONDS": "3600",
            "LB_CALL_SILENCE_SECONDS": "600",
            **self.provider.serve_env(fake_settings),
        }
        self.workdir = workdir
        self.env = env
        self.serve = ServeProcess(workdir, env, worker=False).start()
        self.naive: subprocess.Popen[bytes] | None = None
        self.naive_port = free_port()
        if not args.no_naive:
            naive_env = {**os.environ, "OPENAI_API_KEY": api_key, "OPENAI_BASE_URL": self.model_url}
            self.naive = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "naive_relay.py"),
                    "--port",
                    str(self.naive_port),
                ],
                env=naive_env,
                stdout=subprocess.DEVNULL,
                stderr=open(workdir / "naive.log", "wb"),  # noqa: SIM115
            )
            time.sleep(2.0)

    def warm_up(self) -> None:
        """A few short calls through each system first: imports, the SDK's lazily built event
        models and the first connections must not land in (or backlog) a measured window."""
        for system in ("product", "naive") if self.naive is not None else ("product",):
            self.phase(system, 5, seconds=8.0, ramp=1.0)

    def phase(
        self,
        system: str,
        n: int,
        *,
        profile: bool = False,
        seconds: float | None = None,
        ramp: float | None = None,
    ) -> dict[str, Any]:
        args = argparse.Namespace(**vars(self.args))
        args.seconds = seconds or args.seconds
        args.ramp = ramp if ramp is not None else args.ramp
        if system == "product":
            pid = self.serve.pid
            target = {"mode": "webhook", "url": self.serve.base_url + self.provider.webhook_path}
            if self.provider.events_path:
                target["events"] = self.serve.base_url + self.provider.events_path
        else:
            assert self.naive is not None
            pid = self.naive.pid
            url = f"ws://127.0.0.1:{self.naive_port}{self.provider.naive_path}"
            target = {"mode": "direct", "url": url}
        proc = psutil.Process(pid)
        fakes = [psutil.Process(self.model.pid), psutil.Process(self.callers.pid)]
        idle_rss = proc.memory_info().rss
        self.caller_conn.send(("run", n, args.seconds, args.ramp, target))
        t0 = time.monotonic()
        time.sleep(args.ramp + 2.0)
        w0, cpu0 = time.monotonic(), proc.cpu_times()
        fake0 = [_cpu(f) for f in fakes]
        spy = None
        if profile:
            spy = _start_py_spy(pid, args.seconds - args.ramp - 4.0)
        rss: list[int] = []
        while time.monotonic() < t0 + args.seconds - 1.0:
            rss.append(proc.memory_info().rss)
            time.sleep(0.5)
        w1, cpu1 = time.monotonic(), proc.cpu_times()
        fake1 = [_cpu(f) for f in fakes]
        load = os.getloadavg()
        calls = self.caller_conn.recv()
        self.model_conn.send(("collect", self.provider.append_key))
        sessions = self.model_conn.recv()
        used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        analysis = _analyse(calls, sessions, (w0, w1), outbound_latency=self.provider.outbound)
        # A relay that falls behind does less work per second of call, so its CPU per
        # call-second understates what it needs: also count CPU per second of caller audio
        # it actually delivered to the model (50 frames a second).
        relayed_s = analysis["frames_matched"] / 50
        row = {
            "system": "languagebuddy" if system == "product" else "naive relay",
            "calls": n,
            "cpu_ms_per_call_s": used * 1000 / (n * (w1 - w0)),
            "cpu_cores": used / (w1 - w0),
            "rss_mb_per_call": (sum(rss) / len(rss) - idle_rss) / n / 2**20 if rss else None,
            "fake_model_cores": (fake1[0] - fake0[0]) / (w1 - w0),
            "fake_caller_cores": (fake1[1] - fake0[1]) / (w1 - w0),
            "load1": load[0],
            "loadavg": list(load),
            "window_s": w1 - w0,
            "cpu_ms_per_relayed_s": used * 1000 / relayed_s if relayed_s else None,
            **analysis,
            "outbound_messages_per_call_s": sum(c.get("media_messages", 0) for c in calls)
            / (n * args.seconds),
            "marks_per_call_s": sum(c.get("marks", 0) for c in calls) / (n * args.seconds),
        }
        if spy is not None:
            row["profile"] = _finish_py_spy(spy)
        time.sleep(2.0)  # let the hang-ups settle before the next phase
        return row

    def restart_serve(self, ablate: str) -> None:
        """``serve`` again, with the optimisations named in ``ablate`` undone (see
        ablations.py), or as it is when ``ablate`` is empty."""
        self.serve.stop()
        env = dict(self.env)
        if ablate and ablate != "none":
            site = self.workdir / "ablate-site"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text(
                f"import sys\nsys.path.insert(0, {str(ROOT / 'bench')!r})\nimport ablations\n"
            )
            env["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
            env["LB_BENCH_ABLATE"] = ablate
        self.serve = ServeProcess(self.workdir, env, worker=False).start()

    def close(self) -> None:
        self.serve.stop()
        if self.naive is not None:
            self.naive.terminate()
            self.naive.wait(10)
        for conn in (self.caller_conn, self.model_conn):
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for proc in (self.callers, self.model):
            proc.join(15)
            if proc.is_alive():
                proc.kill()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _start_py_spy(pid: int, duration: float) -> tuple[subprocess.Popen[bytes], Path] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy not found: pip install py-spy into the venv for --profile", file=sys.stderr)
        return None
    out = Path(tempfile.mkstemp(suffix=".txt")[1])
    command = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(max(3, duration))),
        "--rate",
        "200",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def _finish_py_spy(spy: tuple[subprocess.Popen[bytes], Path] | None) -> dict[str, Any]:
    if spy is None:
        return {}
    process, out = spy
    process.wait(120)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        frames = [f for f in stack.split(";") if f]
        total += samples
        if frames:
            own[_frame(frames[-1])] += samples
        for name in {_frame(f) for f in frames}:
            inclusive[name] += samples
    out.unlink(missing_ok=True)
    share = lambda c: [(name, round(100 * n / total, 1)) for name, n in c.most_common(30)]  # noqa: E731
    return {"samples": total, "self_percent": share(own), "inclusive_percent": share(inclusive)}


def _frame(frame: str) -> str:
    """'send (websockets/asyncio/connection.py:123)' -> 'send (websockets/asyncio/connection.py)'"""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


COLUMNS = [
    Column("system", "system", width=18),
    Column("calls", "calls", "d"),
    Column("cpu_ms_per_call_s", "cpu ms/call-s", ".2f"),
    Column("ratio", "ratio", ".2f"),
    Column("cpu_ms_per_relayed_s", "ms/relayed-s", ".2f"),
    Column("rss_mb_per_call", "rss MB/call", ".2f"),
    Column("in_p50", "in p50", ".2f"),
    Column("in_p99", "in p99", ".2f"),
    Column("in_transport_p99", "in p99 w/o hold", ".2f"),
    Column("out_p50", "out p50", ".2f"),
    Column("out_p99", "out p99", ".2f"),
    Column("underruns", "underruns", "d"),
    Column("caller_buffer_max_ms", "buffer max ms", ".0f"),
    Column("barge_p50", "barge p50", ".2f"),
    Column("barge_p99", "barge p99", ".2f"),
    Column("fake_model_cores", "fake model", ".2f"),
    Column("fake_caller_cores", "fake caller", ".2f"),
    Column("load1", "load1", ".2f"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="telnyx")
    parser.add_argument("--calls", default="10,50,100,200", help="levels of concurrent calls")
    parser.add_argument("--seconds", type=float, default=24.0, help="length of each call")
    parser.add_argument("--ramp", type=float, default=4.0, help="calls start over this long")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive relay floor")
    parser.add_argument("--profile", type=int, default=0, help="py-spy profile at N calls")
    parser.add_argument("--label", default="", help="a note saved with the results")
    parser.add_argument(
        "--ablate",
        default="",
        help="';'-separated variants of ablations.py (each a ','-list) run at the last level",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.calls.split(",") if x]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lb-bench-calls-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.warm_up()
            for n in levels:
                row = bench.phase("product", n)
                rows.append(row)
                if not args.no_naive:
                    naive = bench.phase("naive", n)
                    row["ratio"] = row["cpu_ms_per_call_s"] / naive["cpu_ms_per_call_s"]
                    naive["ratio"] = 1.0
                    rows.append(naive)
                print_table(rows, COLUMNS)
                print()
            ablations = []
            for variant in [v for v in args.ablate.split(";") if v]:
                bench.restart_serve(variant)
                bench.phase("product", 5, seconds=8.0, ramp=1.0)  # warm-up
                row = bench.phase("product", levels[-1])
                row["system"] = f"-{variant}"
                ablations.append(row)
                print_table(ablations, COLUMNS)
            if ablations:
                bench.restart_serve("")
            profile = bench.phase("product", args.profile, profile=True) if args.profile else None
        finally:
            bench.close()
    if profile:
        print(f"profile at {args.profile} calls (self time, % of samples):")
        for name, pct in profile.get("profile", {}).get("self_percent", [])[:20]:
            print(f"  {pct:5.1f}  {name}")
    path = save_results(
        f"calls-{args.provider}",
        {
            "parameters": {**vars(args), "turn_every_s": TURN_EVERY, "turn_s": TURN_SECONDS},
            "rows": rows,
            "ablations": ablations,
            "profile": profile,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
