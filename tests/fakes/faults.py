"""Fault injection shared by the messaging fakes: "the next N calls to X answer like this".

Tests run in the pytest thread while the fake serves in its own thread, so the queue is locked.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response


@dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    path_contains: str = ""
    remaining: int = 1
    skip: int = 0  # let this many matching calls through first

    def response(self) -> Response:
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return Response(
            content, status_code=self.status, headers=self.headers, media_type="application/json"
        )


class Faults:
    """A queue of injected answers; the first one whose path matches is used and counted down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        status: int,
        body: Any,
        *,
        count: int = 1,
        headers: dict[str, str] | None = None,
        path_contains: str = "",
        after: int = 0,
    ) -> None:
        """Answer the next ``count`` calls whose path contains ``path_contains``, once
        ``after`` such calls have gone through normally."""
        with self._lock:
            self._faults.append(Fault(status, body, headers or {}, path_contains, count, after))

    def take(self, path: str) -> Response | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_contains in path and fault.remaining > 0:
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault.response()
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
