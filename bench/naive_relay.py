"""The floor of the straightforward design, for bench/calls.py: a Telnyx <-> OpenAI Realtime
relay written the way the samples write it, and nothing else (no tutor, no database); and the
same for Vonage (``/relay-vonage``), with a stateful soxr stream per direction.

One ``input_audio_buffer.append`` per Telnyx frame and one Telnyx ``media`` message (plus a
``mark``) per model delta, the audio decoded to raw bytes and encoded again on each side, the
stdlib ``json`` codec, Starlette's ``WebSocket``, and the SDK's typed events
(``async for event in connection``) and typed sends. Barge-in as in the canonical sample
(clear, then truncate at the played time). Same traffic as the product in the same run, so
the ratio of the two is what compares across machines.

Vonage: each 640-byte L16 frame resampled to 24 kHz and appended; each model delta resampled
to 16 kHz, cut into 640-byte frames sent at once (Vonage buffers them), and a ``notify`` after
it; barge-in sends ``clear`` and truncates at the wall-clock time since the answer began.

    python bench/naive_relay.py --port 8765     # OPENAI_API_KEY / OPENAI_BASE_URL from env
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from contextlib import suppress
from typing import Any

import numpy as np
import soxr
import uvicorn
from openai import AsyncOpenAI
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

MODEL = os.environ.get("LB_REALTIME_MODEL", "gpt-realtime")


async def until_either(*coroutines: Any) -> None:
    """Run both directions until one ends, then stop the other."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task


def answer_began(state: dict[str, Any], item_id: str) -> None:
    """A delta of a new answer: its start is when the caller began to hear it."""
    if item_id != state["item"]:
        state["item"] = item_id
        state["start_ms"] = time.monotonic() * 1000


async def barge_in(
    connection: Any, state: dict[str, Any], send_text: Any, clear: dict[str, str]
) -> bool:
    """The canonical sample's barge-in while audio is unplayed: the carrier's ``clear``, then
    truncate at the wall-clock time since the answer began. True when it acted."""
    if not (state["item"] and state["marks"]):
        return False
    await send_text(json.dumps(clear))
    elapsed = int(time.monotonic() * 1000 - state["start_ms"])
    await connection.conversation.item.truncate(
        item_id=state["item"], content_index=0, audio_end_ms=max(0, elapsed)
    )
    state["marks"].clear()
    state["item"] = None
    return True


async def relay(websocket: WebSocket) -> None:
    await websocket.accept()
    client: AsyncOpenAI = websocket.app.state.client
    async with client.realtime.connect(model=MODEL) as connection:
        await connection.session.update(session=session_for({"type": "audio/pcmu"}))
        await connection.response.create()
        state = {"item": None, "start_ms": 0.0, "marks": [], "last_ms": 0.0}

        async def from_telnyx() -> None:
            while True:
                try:
                    message = json.loads(await websocket.receive_text())
                except WebSocketDisconnect:
                    return
                event = message.get("event")
                if event == "media":
                    raw = base64.b64decode(message["media"]["payload"])
                    state["last_ms"] = time.monotonic() * 1000
                    await connection.input_audio_buffer.append(audio=base64.b64encode(raw).decode())
                elif event == "mark" and state["marks"]:
                    state["marks"].pop(0)
                elif event == "stop":
                    return

        async def from_openai() -> None:
            async for event in connection:
                if event.type == "response.output_audio.delta":
                    raw = base64.b64decode(event.delta)
                    answer_began(state, event.item_id)
                    await websocket.send_text(
                        json.dumps(
                            {"event": "media", "media": {"payload": base64.b64encode(raw).decode()}}
                        )
                    )
                    await websocket.send_text(json.dumps({"event": "mark", "mark": {"name": "r"}}))
                    state["marks"].append("r")
                elif event.type == "input_audio_buffer.speech_started":
                    await barge_in(connection, state, websocket.send_text, {"event": "clear"})

        await until_either(from_telnyx(), from_openai())


class NaiveResampler:
    """One direction of a call as a straightforward relay resamples it: a soxr stream in
    float32, rounded to int16 (soxr's int16 mode dithers, so its output would change from run
    to run; the benchmark recomputes what this one produces to match frames to appends)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")

    def __call__(self, pcm: bytes) -> bytes:
        out = self.stream.resample_chunk(np.frombuffer(pcm, np.int16).astype(np.float32))
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16).tobytes()


def session_for(audio_format: dict[str, Any]) -> dict[str, Any]:
    """The session the samples configure: server VAD, the carrier's format both ways."""
    return {
        "type": "realtime",
        "model": MODEL,
        "output_modalities": ["audio"],
        "instructions": "You are a friendly language tutor on the phone.",
        "audio": {
            "input": {
                "format": audio_format,
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 1000},
            },
            "output": {"format": audio_format, "voice": "alloy"},
        },
    }


async def relay_vonage(websocket: WebSocket) -> None:
    await websocket.accept()
    json.loads(await websocket.receive_text())  # websocket:connected
    client: AsyncOpenAI = websocket.app.state.client
    up, down = NaiveResampler(16000, 24000), NaiveResampler(24000, 16000)
    async with client.realtime.connect(model=MODEL) as connection:
        await connection.session.update(session=session_for({"type": "audio/pcm", "rate": 24000}))
        await connection.response.create()
        state = {"item": None, "start_ms": 0.0, "marks": []}
        pending = bytearray()

        async def from_vonage() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    audio = up(message["bytes"])
                    if audio:
                        await connection.input_audio_buffer.append(
                            audio=base64.b64encode(audio).decode()
                        )
                    continue
                event = json.loads(message["text"])
                if event.get("event") == "websocket:notify" and state["marks"]:
                    state["marks"].pop(0)

        async def from_openai() -> None:
            async for event in connection:
                if event.type == "response.output_audio.delta":
                    answer_began(state, event.item_id)
                    pending.extend(down(base64.b64decode(event.delta)))
                    while len(pending) >= 640:
                        await websocket.send_bytes(bytes(pending[:640]))
                        del pending[:640]
                    notify = {"action": "notify", "payload": {"mark": "r"}}
                    await websocket.send_text(json.dumps(notify))
                    state["marks"].append("r")
                elif event.type == "input_audio_buffer.speech_started" and await barge_in(
                    connection, state, websocket.send_text, {"action": "clear"}
                ):
                    pending.clear()

        await until_either(from_vonage(), from_openai())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    routes = [WebSocketRoute("/relay", relay), WebSocketRoute("/relay-vonage", relay_vonage)]
    app = Starlette(routes=routes)
    app.state.client = AsyncOpenAI(max_retries=0)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
