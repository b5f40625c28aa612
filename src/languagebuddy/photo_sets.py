"""Photos sent together get one lesson, not one each.

A LINE ``imageSet``, a Telegram album (``media_group_id``) or a burst of photos from one learner
on WhatsApp (which marks no set) reach us as separate events. The first one to be claimed holds
on for a short window (``LB_PHOTO_SET_WINDOW_SECONDS``) while the rest arrive; they wait in the
inbox behind it (one learner's items are handled one at a time), so this module only looks at
them. The pipeline takes them out of the inbox in the transaction that stores the lesson, so a
crash either leaves the whole set to do again or none of it: nothing answered twice, nothing lost.

At most ``LB_PHOTO_SET_MAX`` photos (default 4) go to the vision model in one request; the rest
of a set is answered with it, and the tutor is told how many it does not see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from languagebuddy.channels.base import Channel
from languagebuddy.errors import DeliveryError
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import Claimed, Inbox, Queued
from languagebuddy.logs import get_logger
from languagebuddy.media.types import PreparedImage

log = get_logger(__name__)

POLL_SECONDS = 0.1
# However long a burst keeps coming, the first photo is answered by then.
MAX_WAIT_WINDOWS = 4
# Albums hold at most 10 items on Telegram, 20 on LINE; a burst is cut at the cap.
LOOK_AHEAD = 24


@dataclass
class PhotoSet:
    """The photos answered together: ``events`` in the order they were sent (the claimed item's
    first unless the platform numbered them), ``taken`` the inbox ids of the others."""

    events: list[InboundEvent]
    taken: list[int] = field(default_factory=list)

    @property
    def caption(self) -> str | None:
        """Every distinct caption of the set (an album's usually sits on one photo)."""
        seen: list[str] = []
        for event in self.events:
            text = (event.caption or "").strip()
            if text and text not in seen:
                seen.append(text)
        return " / ".join(seen) or None


def may_have_siblings(event: InboundEvent, channel: Channel, window: float) -> bool:
    """Whether a photo may be the first of a set: it names an album, or its platform marks
    no albums (a WhatsApp burst); a photo without an album id on LINE or Telegram is alone."""
    if event.kind is not Kind.IMAGE or window <= 0:
        return False
    return event.album_id is not None or not channel.marks_photo_sets


async def collect(
    inbox: Inbox,
    item: Claimed,
    channel: Channel,
    *,
    window: float,
    cap: int,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PhotoSet:
    """The set the claimed photo opens: its siblings as they stand once the set is complete, or
    once no sibling has arrived for ``window`` seconds."""
    first = item.event
    if not may_have_siblings(first, channel, window):
        return PhotoSet([first])
    started = first.received_at
    while True:
        siblings = _siblings(first, await inbox.following(item, LOOK_AHEAD), window, cap)
        if _complete(first, siblings, cap):
            break
        latest = max([started, *(s.event.received_at for s in siblings)])
        deadline = min(latest + window, started + MAX_WAIT_WINDOWS * window)
        now = clock()
        if now >= deadline:
            break
        await sleep(min(POLL_SECONDS, deadline - now))
    members = [(first.album_index or 0, 0, first)] + [
        (s.event.album_index or 0, n + 1, s.event) for n, s in enumerate(siblings)
    ]
    if first.album_id and all(index for index, _, _ in members):
        members.sort(key=lambda m: m[0])  # LINE numbers the images of a set
    if siblings:
        log.info("photo set", size=len(members), channel=first.channel, album=bool(first.album_id))
    return PhotoSet([event for _, _, event in members], [s.id for s in siblings])


def _siblings(
    first: InboundEvent, following: Sequence[Queued], window: float, cap: int
) -> list[Queued]:
    """The waiting items that belong to ``first``'s set, in order. An album is what shares its
    id (a video in it too: the set is answered as one); without an id, the photos that follow
    each other within ``window``, up to ``cap``. Events that are not turns (a delivery receipt)
    are stepped over and left for later; any other turn ends the set."""
    found: list[Queued] = []
    previous = first.received_at
    for queued in following:
        event = queued.event
        if not event.kind.is_turn:
            continue
        if event.chat_id != first.chat_id:
            break
        if first.album_id:
            if event.album_id != first.album_id:
                break
        elif (
            event.kind is not Kind.IMAGE
            or event.album_id is not None
            or event.received_at - previous > window
            or len(found) + 1 >= cap
        ):
            break
        found.append(queued)
        previous = event.received_at
    return found


def _complete(first: InboundEvent, siblings: Sequence[Queued], cap: int) -> bool:
    if first.album_id:
        return first.album_size is not None and len(siblings) + 1 >= first.album_size
    return len(siblings) + 1 >= cap


@dataclass
class PreparedSet:
    """What the tutor gets of a set: the usable photos (at most the cap) and why any is
    missing; ``problem`` only when none of them could be used."""

    images: list[PreparedImage]
    left_out: int
    problem: str | None


async def prepare(
    photos: PhotoSet, channel: Channel, *, cap: int, max_side: int, max_short_side: int | None
) -> PreparedSet:
    """Download and check up to ``cap`` photos of the set, side by side (each in memory only);
    a photo that cannot be used leaves the others their lesson."""
    from languagebuddy.media.images import ImageRejected, prepare_image_async

    images = [e for e in photos.events if e.kind is Kind.IMAGE]
    chosen = images[:cap]

    async def one(event: InboundEvent) -> PreparedImage | str:
        try:
            media = await channel.download(event)
        except DeliveryError as exc:
            if exc.retryable:
                raise
            return "image_too_large" if exc.code == "too_large" else "image_download_failed"
        try:
            return await prepare_image_async(
                media.data, max_side=max_side, max_short_side=max_short_side
            )
        except ImageRejected as exc:
            return exc.code
        finally:
            del media

    results = await asyncio.gather(*(one(event) for event in chosen), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result  # a retryable platform error: the whole set is tried again later
    usable = [r for r in results if isinstance(r, PreparedImage)]
    problems = [r for r in results if isinstance(r, str)]
    left_out = len(photos.events) - len(usable)
    return PreparedSet(usable, left_out, problems[0] if not usable and problems else None)
