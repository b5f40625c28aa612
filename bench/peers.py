"""The platforms a message benchmark talks to, in a process of their own: the fake OpenAI
(answering every chat request after a fixed model latency) and the fake Telegram Bot API, both
from ``tests/fakes``, so that their CPU is neither the service's nor the load generator's.

Protocol with the parent, over stdout (one JSON object a line): first the peers' addresses and
credentials, then one ``{"chat": <chat id>, "at": <epoch seconds>}`` per message Telegram
accepted. The process exits when its stdin closes.

    python bench/peers.py --model-latency 0.8
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.openai import FakeOpenAI, Scripted  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402

REPLY = (
    "¡Muy bien! Se dice «fui al mercado ayer». ¿Qué compraste en el mercado? "
    "Cuéntame con una frase completa."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-latency", type=float, default=0.8, help="seconds per chat call")
    args = parser.parse_args()
    out_lock = threading.Lock()

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps(record)
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    with FakeOpenAI() as ai, FakeTelegram() as telegram:
        ai.script(Scripted(text=REPLY, delay=args.model_latency, times=None))
        telegram.on_sent = lambda sent: emit({"chat": str(sent.get("chat_id")), "at": time.time()})
        emit(
            {
                "openai_base_url": ai.base_url,
                "openai_api_key": ai.api_key,
                "telegram": telegram.settings(),
                "telegram_headers": telegram.headers(),
                "model_latency": args.model_latency,
            }
        )
        sys.stdin.read()  # until the parent closes it (or dies)


if __name__ == "__main__":
    main()
