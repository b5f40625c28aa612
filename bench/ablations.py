"""Each hot-path optimisation of the call bridge undone, one at a time, for ``bench/calls.py
--ablate``: the "before" of the before/after table, measured on today's code.

Applied inside the ``serve`` child process only (through a ``sitecustomize`` the benchmark puts
on its ``PYTHONPATH``), by monkeypatching: the product has no switch for any of this.

* ``stdlib_json``: the stdlib ``json`` codec instead of orjson for every message;
* ``dict_messages``: the two hot messages (append, media) built as dicts and serialised,
  instead of concatenated around the base64 text;
* ``b64_roundtrip``: audio decoded to bytes and encoded again on each side (as relays that
  handle "raw frames" do), instead of forwarding the base64 text;
* ``sdk_send``: events sent through the SDK's ``send_raw`` (its reconnect queue) instead of
  the ``websockets`` connection it opened;
* ``sdk_events``: every server event also parsed into the SDK's typed models, as
  ``async for event in connection`` does;
* ``marks_every_chunk``: a mark after every outbound media message instead of every 200 ms;
* ``media_20ms``: outbound audio re-chunked into 20 ms media messages, each with a mark;
* ``none``: nothing undone (a restart like the others: the run-to-run noise).
"""

# ruff: noqa: B023 - each patch is applied once per process; its closure is the one intended
from __future__ import annotations

import base64
import json
import os


def apply(names: list[str]) -> None:
    from languagebuddy.ai import realtime
    from languagebuddy.calls import bridge, telnyx_serializer

    for name in names:
        if name == "stdlib_json":
            realtime.loads = json.loads
            bridge.load_event = json.loads
            telnyx_serializer.loads = json.loads
            realtime.dumps = lambda event: json.dumps(event)
            bridge.dump_event = realtime.dumps
        elif name == "dict_messages":

            def append_event(audio: str) -> str:
                return json.dumps({"type": "input_audio_buffer.append", "audio": audio})

            bridge.append_event = append_event

            async def send_audio(self, audio_b64: str, nbytes: int) -> None:  # type: ignore[no-untyped-def]
                await self._send(json.dumps({"event": "media", "media": {"payload": audio_b64}}))

            async def send_mark(self, name: str) -> None:  # type: ignore[no-untyped-def]
                await self._send(json.dumps({"event": "mark", "mark": {"name": name}}))

            telnyx_serializer.TelnyxCarrier.send_audio = send_audio
            telnyx_serializer.TelnyxCarrier.send_mark = send_mark
        elif name == "b64_roundtrip":
            original_audio = bridge.Bridge.caller_audio
            original_send = telnyx_serializer.TelnyxCarrier.send_audio

            async def caller_audio(self, audio_b64: str) -> None:  # type: ignore[no-untyped-def]
                raw = base64.b64decode(audio_b64)
                await original_audio(self, base64.b64encode(raw).decode())

            async def carrier_audio(self, audio_b64: str, nbytes: int) -> None:  # type: ignore[no-untyped-def]
                raw = base64.b64decode(audio_b64)
                await original_send(self, base64.b64encode(raw).decode(), nbytes)

            bridge.Bridge.caller_audio = caller_audio
            telnyx_serializer.TelnyxCarrier.send_audio = carrier_audio
        elif name == "sdk_send":
            original_init = realtime.RealtimeSession.__init__

            def init(self, connection, model):  # type: ignore[no-untyped-def]
                original_init(self, connection, model)
                self._send = connection.send_raw

            realtime.RealtimeSession.__init__ = init
        elif name == "sdk_events":
            original_recv = realtime.RealtimeSession.recv

            async def recv(self):  # type: ignore[no-untyped-def]
                data = await original_recv(self)
                self._connection.parse_event(data)
                return data

            realtime.RealtimeSession.recv = recv
        elif name == "marks_every_chunk":
            bridge.MARK_EVERY_MS = 0
        elif name == "media_20ms":
            bridge.MARK_EVERY_MS = 0
            original_send = bridge.Bridge._send

            async def send_20ms(self, audio_b64: str, nbytes: int, *, last: bool = False):  # type: ignore[no-untyped-def]
                raw = base64.b64decode(audio_b64)
                for start in range(0, len(raw), 160):
                    piece = raw[start : start + 160]
                    await original_send(self, base64.b64encode(piece).decode(), len(piece))

            bridge.Bridge._send = send_20ms
        elif name == "none":  # the code as it is, restarted like the others (noise check)
            pass
        elif name:
            raise SystemExit(f"unknown ablation {name!r}")


if os.environ.get("LB_BENCH_ABLATE"):
    apply(os.environ["LB_BENCH_ABLATE"].split(","))
