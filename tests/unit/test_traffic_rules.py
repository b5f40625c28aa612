"""The rules under channel traffic, one by one: which external media URLs may be fetched, which
waiting photos belong to a set (and how long the first one waits), how pending edits fold into
their message, and Telegram's UTF-16 entity offsets."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from languagebuddy.channels.http import RefusedUrl, check_external_url
from languagebuddy.channels.telegram import _entity_text
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import Inbox, Queued
from languagebuddy.photo_sets import collect
from languagebuddy.side_events import changes_in
from tests.corpus import telegram as tg

# --------------------------------------------------------------------------- external URLs


@pytest.mark.parametrize(
    "url",
    [
        "https://obs.line-scdn.net/r/talk/m/abc",
        "https://cdn.example.com:8443/a.jpg?sig=1",
        "https://[2606:4700::1111]/a.jpg",
    ],
)
def test_public_https_urls_may_be_fetched(url: str) -> None:
    assert str(check_external_url(url)) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://cdn.example.com/a.jpg", "https only"),
        ("ftp://cdn.example.com/a.jpg", "https only"),
        ("file:///etc/passwd", "no host"),
        ("https://user:secret@cdn.example.com/a.jpg", "credentials"),
        ("https://127.0.0.1/a.jpg", "private"),
        ("https://10.1.2.3/a.jpg", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://[::1]/a.jpg", "private"),
        ("https://localhost/a.jpg", "private"),
        ("https://metadata.internal/a.jpg", "private"),
        ("not a url", "no host"),
        ("https:///a.jpg", "no host"),
    ],
)
def test_unsafe_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(RefusedUrl) as info:
        check_external_url(url)
    assert reason in str(info.value) and info.value.retryable is False


def test_a_listed_host_may_use_plain_http_and_a_private_address() -> None:
    hosts = frozenset({"127.0.0.1:8081"})
    assert check_external_url("http://127.0.0.1:8081/media/a.jpg", hosts)
    assert check_external_url("https://127.0.0.1:8081/media/a.jpg", hosts)
    with pytest.raises(RefusedUrl):  # another port of the same host is not listed
        check_external_url("http://127.0.0.1:8082/media/a.jpg", hosts)


# --------------------------------------------------------------------------- photo sets


def photo(n: int, *, at: float, album: str | None = None, size: int | None = None) -> InboundEvent:
    return InboundEvent(
        channel="whatsapp",
        event_id=f"wamid.{n}",
        message_id=f"wamid.{n}",
        user_id="551100000001",
        kind=Kind.IMAGE,
        media_id=str(n),
        album_id=album,
        album_size=size,
        received_at=at,
    )


class Clock:
    """Time that moves only when the collector sleeps."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept = 0.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


class WhatsAppLike:
    marks_photo_sets = False


class LineLike:
    marks_photo_sets = True


async def test_a_burst_is_collected_up_to_the_cap(sqlite_engine: AsyncEngine) -> None:
    inbox = Inbox(sqlite_engine)
    await inbox.put_many([photo(n, at=100.0 + 0.2 * n) for n in range(6)])
    item = await inbox.claim("w", 30, ["whatsapp"])
    assert item is not None
    clock = Clock(100.0)
    found = await collect(
        inbox, item, WhatsAppLike(), window=1.0, cap=4, clock=clock.time, sleep=clock.sleep
    )  # type: ignore[arg-type]
    assert [e.media_id for e in found.events] == ["0", "1", "2", "3"]
    assert len(found.taken) == 3 and clock.slept == 0  # complete at once: no wait


async def test_a_lone_whatsapp_photo_waits_the_window_once(sqlite_engine: AsyncEngine) -> None:
    inbox = Inbox(sqlite_engine)
    await inbox.put(photo(1, at=100.0))
    item = await inbox.claim("w", 30, ["whatsapp"])
    assert item is not None
    clock = Clock(100.0)
    found = await collect(
        inbox, item, WhatsAppLike(), window=1.5, cap=4, clock=clock.time, sleep=clock.sleep
    )  # type: ignore[arg-type]
    assert [e.media_id for e in found.events] == ["1"] and found.taken == []
    assert clock.slept == pytest.approx(1.5)


async def test_a_photo_without_an_album_where_albums_are_marked_is_alone(
    sqlite_engine: AsyncEngine,
) -> None:
    inbox = Inbox(sqlite_engine)
    await inbox.put_many([photo(1, at=100.0), photo(2, at=100.1)])
    item = await inbox.claim("w", 30, ["whatsapp"])
    assert item is not None
    clock = Clock(100.0)
    found = await collect(
        inbox, item, LineLike(), window=1.5, cap=4, clock=clock.time, sleep=clock.sleep
    )  # type: ignore[arg-type]
    assert len(found.events) == 1 and clock.slept == 0


async def test_an_album_is_whatever_shares_its_id_and_stops_at_its_size(
    sqlite_engine: AsyncEngine,
) -> None:
    inbox = Inbox(sqlite_engine)
    album = [photo(n, at=100.0, album="A", size=3) for n in range(3)]
    other = photo(9, at=100.1, album="B", size=1)
    await inbox.put_many([album[0], album[1], other, album[2]])
    item = await inbox.claim("w", 30, ["whatsapp"])
    assert item is not None
    clock = Clock(100.0)
    found = await collect(
        inbox, item, LineLike(), window=1.0, cap=4, clock=clock.time, sleep=clock.sleep
    )  # type: ignore[arg-type]
    assert [e.media_id for e in found.events] == ["0", "1"]  # another album ends the run
    assert clock.slept == pytest.approx(1.0)  # waited for the third, which came too late


# --------------------------------------------------------------------------- edits


def test_the_latest_edit_by_platform_time_wins_and_deletions_are_seen() -> None:
    original = InboundEvent(
        channel="line", event_id="e0", user_id="U1", kind=Kind.TEXT, text="v0", message_id="m1"
    )

    def edit(n: int, text: str, sent_at: float, target: str = "m1") -> Queued:
        event = InboundEvent(
            channel="line",
            event_id=f"e{n}",
            user_id="U1",
            kind=Kind.EDIT,
            text=text,
            target_message_id=target,
            sent_at=sent_at,
        )
        return Queued(n, event)

    # LINE: "multiple messageEdited events may arrive out of order"
    following = [edit(1, "v2", 20.0), edit(2, "v1", 10.0), edit(3, "other", 30.0, target="m2")]
    changes = changes_in(original, following)
    assert [q.id for q in changes.edits] == [1, 2] and changes.deletions == []
    assert changes.apply(original).text == "v2"
    deletion = Queued(
        4,
        InboundEvent(
            channel="line", event_id="d", user_id="U1", kind=Kind.DELETE, target_message_id="m1"
        ),
    )
    assert changes_in(original, [deletion]).deletions == [deletion]


# --------------------------------------------------------------------------- Telegram


def test_telegram_entities_count_utf16_code_units() -> None:
    text = "👋🏽 @languagebuddy_test_bot hola"  # two astral characters before the mention
    entity = {"type": "mention", "offset": 5, "length": 23}
    assert _entity_text(text, entity) == "@languagebuddy_test_bot"


def test_a_topic_reply_to_the_topics_opening_is_not_a_reply() -> None:
    [case] = [c for c in tg.CASES if c.name == "forum_topic_mention"]
    message = case.bodies[0]["message"]
    assert "forum_topic_created" in message["reply_to_message"]
    assert case.events[0]["reply_to_message_id"] is None
