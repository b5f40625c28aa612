"""The floor of the webhook path: a minimal ASGI app doing the same work as our routes, served by
the same uvicorn (httptools, uvloop), for ``bench/webhooks.py`` to measure in the same run.

Per request: read the body, check the signature (WhatsApp and LINE: HMAC-SHA256 of the raw body;
Telegram: the secret token header), parse the JSON and take the few fields an inbox row needs,
insert one row into the same ``inbox`` table with one committed statement (asyncpg, autocommit,
``ON CONFLICT DO NOTHING``), answer 200. No framework, no ORM, no validation models, no logging:
whatever our service spends beyond this is the price of its features and layers.

    python bench/floor_webhook.py --port 8100 --dsn postgresql://postgres@127.0.0.1/db \\
        --whatsapp-secret S --telegram-secret T --line-secret L
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import asyncpg
import uvicorn

INSERT = """
INSERT INTO inbox (dedupe_key, order_key, channel, payload, status, attempts, created_at,
                   available_at, apology_sent)
VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, false)
ON CONFLICT (dedupe_key) DO NOTHING RETURNING id
"""


def _whatsapp(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    text = {"kind": "text", "text": message["text"]["body"], "message_id": message["id"]}
    return message["id"], message["from"], text


def _telegram(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    message = body["message"]
    chat = str(message["chat"]["id"])
    text = {"kind": "text", "text": message["text"], "message_id": str(message["message_id"])}
    return str(body["update_id"]), chat, text


def _line(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    event = body["events"][0]
    message = event["message"]
    text = {"kind": "text", "text": message["text"], "reply_token": event["replyToken"]}
    return event["webhookEventId"], event["source"]["userId"], text


class FloorApp:
    def __init__(self, dsn: str, secrets: dict[str, bytes]) -> None:
        self.dsn = dsn
        self.secrets = secrets
        self.pool: asyncpg.Pool | None = None

    def _verified(self, channel: str, headers: dict[bytes, bytes], body: bytes) -> bool:
        secret = self.secrets[channel]
        if channel == "whatsapp":
            expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
            return hmac.compare_digest(headers.get(b"x-hub-signature-256", b""), expected)
        if channel == "telegram":
            supplied = headers.get(b"x-telegram-bot-api-secret-token", b"")
            return hmac.compare_digest(supplied, secret)
        expected = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())
        return hmac.compare_digest(headers.get(b"x-line-signature", b""), expected)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.pool = await asyncpg.create_pool(self.dsn, min_size=4, max_size=40)
                    await self.started()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.stopping()
                    if self.pool is not None:
                        await self.pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/readyz":
            await self._answer(send, 200, b'{"status":"ready"}')
            return
        channel = path.rsplit("/", 1)[-1]
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = dict(scope["headers"])
        if channel not in self.secrets or not self._verified(channel, headers, body):
            await self._answer(send, 403, b'{"status":"rejected"}')
            return
        parse = {"whatsapp": _whatsapp, "telegram": _telegram, "line": _line}[channel]
        event_id, user, payload = parse(json.loads(body))
        payload.update(channel=channel, event_id=event_id, user_id=user)
        assert self.pool is not None
        await self.pool.fetchval(
            INSERT,
            f"{channel}:{event_id}",
            f"{channel}:{user}",
            channel,
            json.dumps(payload),
            time.time(),
        )
        self.stored()
        await self._answer(send, 200, b'{"status":"ok","events":1,"new":1}')

    # Hooks for a floor that also answers what it stores (floor_messages.py).
    async def started(self) -> None:
        return None

    async def stopping(self) -> None:
        return None

    def stored(self) -> None:
        return None

    @staticmethod
    async def _answer(send: Any, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--whatsapp-secret", required=True)
    parser.add_argument("--telegram-secret", required=True)
    parser.add_argument("--line-secret", required=True)
    args = parser.parse_args()
    app = FloorApp(
        args.dsn,
        {
            "whatsapp": args.whatsapp_secret.encode(),
            "telegram": args.telegram_secret.encode(),
            "line": args.line_secret.encode(),
        },
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
