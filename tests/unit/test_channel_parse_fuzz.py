"""Every channel's parse either returns events or raises BadPayload, whatever the body."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from languagebuddy.channels.base import BadPayload
from languagebuddy.channels.line import LineChannel
from languagebuddy.channels.telegram import TelegramChannel
from languagebuddy.channels.whatsapp import WhatsAppChannel
from languagebuddy.config import Settings
from languagebuddy.events import InboundEvent
from tests.fakes.line import line_event
from tests.fakes.telegram import telegram_update
from tests.fakes.whatsapp import whatsapp_envelope, whatsapp_message

CONFIG = Settings(  # type: ignore[call-arg]
    _env_file=None,
    whatsapp_access_token="t",
    whatsapp_phone_number_id="1",
    whatsapp_app_secret="s",
    telegram_bot_token="1:t",
    telegram_webhook_secret="s",
    line_channel_access_token="t",
    line_channel_secret="s",
)
CHANNELS = [WhatsAppChannel(CONFIG), TelegramChannel(CONFIG), LineChannel(CONFIG)]

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=20,
)
KEYS = [
    "id",
    "type",
    "from",
    "text",
    "body",
    "chat",
    "message_id",
    "photo",
    "voice",
    "userId",
    "source",
    "message",
    "webhookEventId",
    "contacts",
    "wa_id",
    "user_id",
    "statuses",
    "status",
    "errors",
    "file_id",
    "mime_type",
    "duration",
    "profile",
]
plausible = st.recursive(
    values,
    lambda inner: (
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5) | st.lists(inner, max_size=3)
    ),
    max_leaves=30,
)
shapes = st.one_of(
    st.builds(
        lambda v: whatsapp_envelope({"messages": [v], "contacts": [v], "statuses": v}), plausible
    ),
    st.builds(
        lambda v, k: whatsapp_envelope({"messages": [{**whatsapp_message(k, v), "from": v}]}),
        plausible,
        st.sampled_from(["text", "image", "audio", "interactive", "button", "document"]),
    ),
    st.builds(
        lambda v: telegram_update({"photo": v, "voice": v, "document": v, "from": v}), plausible
    ),
    st.builds(lambda v: {**telegram_update({"text": "x"}), "message": v}, plausible),
    st.builds(
        lambda v: {"events": [{**line_event({"id": "1", "type": "text"}), "source": v}]}, plausible
    ),
    st.builds(lambda v: {"events": [line_event(v)]}, plausible),
    plausible,
)


@settings(max_examples=1500, deadline=None)
@given(body=st.one_of(st.binary(max_size=200), shapes.map(lambda s: json.dumps(s).encode())))
def test_parse_returns_events_or_bad_payload(body: bytes) -> None:
    for channel in CHANNELS:
        try:
            events = channel.parse(body)
        except BadPayload:
            continue
        assert all(isinstance(e, InboundEvent) for e in events)
        assert all(e.event_id and e.user_id for e in events)
