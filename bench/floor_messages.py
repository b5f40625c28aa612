"""The floor of the message path: the webhook floor (``floor_webhook.py``) plus, in the same
process as our ``serve`` runs its worker, the minimal I/O of answering one text message.

Per message: claim the inbox row (the same leased, per-learner-ordered ``UPDATE ... RETURNING``
the service uses), load the learner (created on first contact) and its last 16 turns, one chat
completion (non-streaming), store both turns and mark the row done in one transaction, one
``sendMessage``. Raw asyncpg and one ``httpx.AsyncClient``; no ORM, no models, no tutor, no
logging, no typing indicator. ``bench/messages.py`` runs it beside ``serve`` and reports our CPU
per message as a ratio to this.

    python bench/floor_messages.py --port 8100 --dsn postgresql://... --openai URL \\
        --openai-key K --telegram URL --telegram-token T --telegram-secret S --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from typing import Any

import httpx
import uvicorn
from floor_webhook import FloorApp

CLAIM = """
UPDATE inbox SET status = 'processing', lease_owner = $1, lease_until = $2 + 60,
       attempts = attempts + 1
WHERE id = (
    SELECT i.id FROM inbox AS i
    WHERE ((i.status = 'pending' AND i.available_at <= $2)
           OR (i.status = 'processing' AND i.lease_until < $2))
      AND NOT EXISTS (
          SELECT 1 FROM inbox AS j
          WHERE j.order_key = i.order_key AND j.id < i.id
            AND j.status IN ('pending', 'processing'))
    ORDER BY i.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, payload
"""
LEARNER = """
SELECT l.id FROM identities AS i JOIN learners AS l ON l.id = i.learner_id
WHERE i.channel = $1 AND i.channel_user_id = $2
"""
NEW_LEARNER = """
INSERT INTO learners (created_at, updated_at) VALUES ($1, $1) RETURNING id
"""
NEW_IDENTITY = """
INSERT INTO identities (learner_id, channel, channel_user_id, created_at) VALUES ($1, $2, $3, $4)
"""
MEMORY = "SELECT direction, text FROM turns WHERE learner_id = $1 ORDER BY id DESC LIMIT 16"
TURN = """
INSERT INTO turns (learner_id, inbox_item_id, created_at, direction, modality, channel, text)
VALUES ($1, $2, $3, $4, 'text', $5, $6)
"""
DONE = "UPDATE inbox SET status = 'done', finished_at = $2, lease_owner = NULL WHERE id = $1"
SYSTEM = "You are a friendly language tutor. Answer in the learner's target language."


class FloorWorkerApp(FloorApp):
    """The webhook floor, and ``concurrency`` claim-answer loops woken by its inserts."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(
            args.dsn,
            {
                "whatsapp": b"-",
                "telegram": args.telegram_secret.encode(),
                "line": b"-",
            },
        )
        self.args = args
        self.owner = f"floor:{os.getpid()}"
        self.wakeups: asyncio.Queue[None] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.http: httpx.AsyncClient | None = None

    async def started(self) -> None:
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200))
        self.tasks = [asyncio.create_task(self.slot()) for _ in range(self.args.concurrency)]

    async def stopping(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()

    def stored(self) -> None:
        self.wakeups.put_nowait(None)

    async def slot(self) -> None:
        while True:
            if not await self.answer_one():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeups.get(), timeout=1.0)

    async def answer_one(self) -> bool:
        assert self.pool is not None and self.http is not None
        args = self.args
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(CLAIM, self.owner, time.time())
            if row is None:
                return False
            event: dict[str, Any] = json.loads(row["payload"])
            channel, user = event["channel"], event["user_id"]
            learner = await conn.fetchval(LEARNER, channel, user)
            if learner is None:
                async with conn.transaction():
                    learner = await conn.fetchval(NEW_LEARNER, time.time())
                    await conn.execute(NEW_IDENTITY, learner, channel, user, time.time())
            memory = await conn.fetch(MEMORY, learner)
        history = [
            {"role": "user" if m["direction"] == "in" else "assistant", "content": m["text"]}
            for m in reversed(memory)
        ]
        messages = [
            {"role": "system", "content": SYSTEM},
            *history,
            {"role": "user", "content": event["text"]},
        ]
        answer = await self.http.post(
            f"{args.openai}/chat/completions",
            json={"model": "gpt-4o", "messages": messages},
            headers={"Authorization": f"Bearer {args.openai_key}"},
        )
        text = answer.json()["choices"][0]["message"]["content"]
        now = time.time()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(TURN, learner, row["id"], now, "in", channel, event["text"])
            await conn.execute(TURN, learner, row["id"], now, "out", channel, text)
        await self.http.post(
            f"{args.telegram}/bot{args.telegram_token}/sendMessage",
            json={"chat_id": int(user), "text": text},
        )
        async with self.pool.acquire() as conn:
            await conn.execute(DONE, row["id"], time.time())
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--openai", required=True, help="OpenAI base URL, /v1 included")
    parser.add_argument("--openai-key", required=True)
    parser.add_argument("--telegram", required=True, help="Bot API base URL")
    parser.add_argument("--telegram-token", required=True)
    parser.add_argument("--telegram-secret", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    app = FloorWorkerApp(args)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
