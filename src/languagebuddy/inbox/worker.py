"""The worker loop: claim, handle under a renewed lease, then done / retry / dead letter.

It knows nothing about channels or the tutor: it runs a handler and classifies what the handler
raised. ``DeliveryError`` and ``ModelUnavailable`` carry their own retryability; anything else is
treated as transient (a bug then ends in the dead letter after ``max_attempts`` with its reason).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from contextlib import suppress
from dataclasses import dataclass

from languagebuddy.errors import DeliveryError, ModelUnavailable, PermanentFailure
from languagebuddy.inbox.queue import DEAD, Claimed, Inbox
from languagebuddy.logs import get_logger
from languagebuddy.metrics import EVENTS_PROCESSED, STAGE_SECONDS

log = get_logger(__name__)

Handler = Callable[[Claimed], Awaitable[None]]


@dataclass
class WorkerOptions:
    concurrency: int = 8
    lease_seconds: float = 60.0
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    idle_poll_seconds: float = 1.0
    drain_seconds: float = 20.0


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def classify(exc: BaseException) -> tuple[bool, float | None, str]:
    """(retryable, retry_after, reason) for what a handler raised."""
    if isinstance(exc, DeliveryError):
        code = f" [{exc.code}]" if exc.code else ""
        return exc.retryable, exc.retry_after, f"delivery{code}: {exc}"
    if isinstance(exc, ModelUnavailable):
        return True, exc.retry_after, f"model unavailable: {exc}"
    if isinstance(exc, PermanentFailure):
        return False, None, f"permanent: {exc}"
    return True, None, f"{type(exc).__name__}: {exc}"


class Worker:
    """Runs ``concurrency`` claim-handle loops until ``stop`` is set."""

    def __init__(
        self,
        inbox: Inbox,
        handler: Handler,
        channels: Collection[str],
        options: WorkerOptions | None = None,
        *,
        order_key: str | None = None,
    ) -> None:
        self.inbox = inbox
        self.handler = handler
        self.channels = list(channels)
        # Only this learner's events (the terminal chat answers its own learner, nobody else).
        self.order_key = order_key
        self.options = options or WorkerOptions()
        self.owner = worker_id()
        # One token per stored event wakes one idle slot (not all of them racing for one item);
        # a token put while every slot is busy waits in the queue, so no wake-up is lost. A
        # token that stands for an unknown number of items (a poll, another process's
        # notification) is passed on by the slot that found one, so a backlog fans out.
        self._wakeups: asyncio.Queue[bool] = asyncio.Queue(maxsize=self.options.concurrency)
        inbox.on_put(self.wake)

    async def run(self, stop: asyncio.Event) -> None:
        if not self.channels:
            log.warning("worker has no channel to serve; idle")
            await stop.wait()
            return
        slots = [
            asyncio.create_task(self._slot(stop, n), name=f"inbox-slot-{n}")
            for n in range(self.options.concurrency)
        ]
        slots.append(asyncio.create_task(self._poll(stop), name="inbox-poll"))
        try:
            await stop.wait()
            # Drain: no new claims; items in hand get ``drain_seconds`` to finish (a deploy
            # should not make learners wait for a lease to expire).
            self.wake(self.options.concurrency)
            await asyncio.wait(slots, timeout=self.options.drain_seconds)
        finally:
            for task in slots:
                task.cancel()  # what is still in hand is released back to the inbox
            for task in slots:
                with suppress(asyncio.CancelledError):
                    await task

    async def run_until_idle(self) -> int:
        """Handle claimable items one after another until none is left; returns how many."""
        handled = 0
        while await self.run_once():
            handled += 1
        return handled

    async def run_once(self) -> bool:
        """Claim and handle one item; False when nothing was claimable."""
        item = await self.inbox.claim(
            self.owner, self.options.lease_seconds, self.channels, order_key=self.order_key
        )
        if item is None:
            return False
        await self._handle(item)
        return True

    async def _slot(self, stop: asyncio.Event, n: int) -> None:
        """Claim when woken; after an item, claim again at once (the learner's next event
        may have been waiting behind it). Idle slots cost nothing: only ``_poll`` polls."""
        fan_out = True  # a fresh slot looks once
        while not stop.is_set():
            try:
                item = await self.inbox.claim(self.owner, self.options.lease_seconds, self.channels)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inbox claim failed", slot=n)
                item = None
            if item is not None:
                if fan_out:
                    self.wake(1, fan_out=True)
                await self._handle(item)
                continue
            fan_out = await self._wakeups.get()

    async def _poll(self, stop: asyncio.Event) -> None:
        """Once per ``idle_poll_seconds``, one slot looks for what no wake-up announced:
        retries that came due, leases that expired, other processes' events on SQLite."""
        while not stop.is_set():
            with suppress(TimeoutError):  # a stop ends the wait at once, not at the next poll
                await asyncio.wait_for(stop.wait(), timeout=self.options.idle_poll_seconds)
            self.wake(1, fan_out=True)

    def wake(self, new: int, *, fan_out: bool = False) -> None:
        """``new`` items may be claimable: wake as many idle slots (an in-process put). With
        ``fan_out`` the count is unknown (a poll, a PostgreSQL notification from another
        process): each slot that finds an item wakes one more."""
        for _ in range(min(new, self.options.concurrency)):
            with suppress(asyncio.QueueFull):
                self._wakeups.put_nowait(fan_out)

    async def _handle(self, item: Claimed) -> None:
        started = time.perf_counter()
        renew = asyncio.create_task(self._keep_lease(item))
        channel, kind = item.event.channel, item.event.kind.value
        try:
            await self.handler(item)
        except asyncio.CancelledError:
            # Shutting down mid-item: hand it back at once instead of leaving it to its lease.
            with suppress(Exception):
                await asyncio.shield(self.inbox.release(item))
            raise
        except Exception as exc:
            renew.cancel()
            retryable, retry_after, reason = classify(exc)
            status = await self.inbox.fail(
                item,
                reason,
                retryable=retryable,
                max_attempts=self.options.max_attempts,
                base_delay=self.options.retry_base_seconds,
                retry_after=retry_after,
            )
            result = "dead" if status == DEAD else "retry"
            EVENTS_PROCESSED.labels(channel, kind, result).inc()
            log_event = log.error if status == DEAD else log.warning
            log_event(
                "event failed",
                item=item.id,
                channel=channel,
                attempt=item.attempts,
                result=result,
                reason=reason[:300],
                exc_info=not isinstance(exc, DeliveryError | ModelUnavailable | PermanentFailure),
            )
            return
        finally:
            renew.cancel()
            with suppress(asyncio.CancelledError):
                await renew
        if not await self.inbox.done(item):
            log.warning("lease lost before done", item=item.id)
        EVENTS_PROCESSED.labels(channel, kind, "done").inc()
        STAGE_SECONDS.labels("total").observe(time.perf_counter() - started)

    async def _keep_lease(self, item: Claimed) -> None:
        """Renew the lease at a third of its length so a slow model never loses the item."""
        period = self.options.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            if not await self.inbox.extend(item, self.options.lease_seconds):
                log.warning("lease lost while handling", item=item.id)
                return
