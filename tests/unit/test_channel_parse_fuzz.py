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


# --- nothing valid produces a reply to something the learner did not say -------------------

words = st.text(min_size=1, max_size=40)
maybe = st.none() | words | st.integers() | st.dictionaries(st.text(max_size=5), words, max_size=2)
ids = st.integers(min_value=1, max_value=10**12)

wa_not_turns = st.one_of(
    st.builds(
        lambda e, t: {"type": "reaction", "reaction": {"message_id": t, "emoji": e}}, maybe, maybe
    ),
    st.builds(lambda t: {"type": "revoke", "revoke": {"original_message_id": t}}, maybe),
    st.builds(
        lambda t, b: {
            "type": "edit",
            "edit": {"original_message_id": t, "message": {"type": "text", "text": {"body": b}}},
        },
        maybe,
        maybe,
    ),
    st.builds(
        lambda k, w, b: {"type": "system", "system": {"type": k, "wa_id": w, "body": b}},
        st.sampled_from(
            ["user_changed_number", "customer_identity_changed", "user_changed_user_id", "other"]
        )
        | maybe,
        maybe,
        maybe,
    ),
    st.builds(lambda k: {"type": k}, st.sampled_from(["request_welcome"])),
)
tg_not_turns = st.one_of(
    st.builds(
        lambda key, text: {
            key: {
                "message_id": 5,
                "chat": {"id": 9, "type": "private"},
                "from": {"id": 9, "is_bot": False},
                "date": 1,
                "text": text,
            }
        },
        st.sampled_from(
            ["edited_message", "channel_post", "edited_channel_post", "business_message"]
        ),
        words,
    ),
    st.builds(
        lambda reactions: {
            "message_reaction": {
                "chat": {"id": 9, "type": "private"},
                "message_id": 5,
                "user": {"id": 9, "is_bot": False},
                "date": 1,
                "old_reaction": [],
                "new_reaction": reactions,
            }
        },
        st.lists(st.builds(lambda e: {"type": "emoji", "emoji": e}, words), max_size=3),
    ),
    st.builds(
        lambda key, value: {key: value},
        st.sampled_from(
            [
                "callback_query",
                "my_chat_member",
                "chat_member",
                "poll",
                "poll_answer",
                "inline_query",
                "chat_join_request",
                "message_reaction_count",
                "chat_boost",
            ]
        ),
        st.dictionaries(st.sampled_from(KEYS), maybe, max_size=4),
    ),
)
line_not_turns = st.builds(
    lambda kind, content: {
        "type": kind,
        "mode": "active",
        "timestamp": 1,
        "webhookEventId": "01X",
        "source": {"type": "user", "userId": "U1"},
        "replyToken": "r",
        **content,
    },
    st.sampled_from(
        [
            "follow",
            "unfollow",
            "join",
            "leave",
            "memberJoined",
            "memberLeft",
            "postback",
            "beacon",
            "accountLink",
            "videoPlayComplete",
            "unsend",
            "messageEdited",
            "membership",
            "botResumed",
        ]
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "unsend": st.fixed_dictionaries({"messageId": maybe}),
            "message": st.fixed_dictionaries({"id": maybe, "type": st.just("text"), "text": words}),
            "postback": st.fixed_dictionaries({"data": words}),
        },
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    wa_message=wa_not_turns,
    tg_update=tg_not_turns,
    line_event=line_not_turns,
    update_id=ids,
)
def test_what_is_not_a_message_is_never_a_turn(
    wa_message: dict, tg_update: dict, line_event: dict, update_id: int
) -> None:
    bodies = [
        (
            CHANNELS[0],
            whatsapp_envelope({"messages": [{**whatsapp_message("x", None), **wa_message}]}),
        ),
        (CHANNELS[1], {"update_id": update_id, **tg_update}),
        (CHANNELS[2], {"events": [line_event]}),
    ]
    for channel, body in bodies:
        try:
            events = channel.parse(json.dumps(body).encode())
        except BadPayload:
            continue
        assert not [e for e in events if e.kind.is_turn], (channel.name, body)


GROUP_ENTITIES = st.lists(
    st.builds(
        lambda kind, offset, length: {"type": kind, "offset": offset, "length": length},
        st.sampled_from(["bold", "italic", "url", "hashtag", "code", "phone_number"]),
        st.integers(0, 10),
        st.integers(1, 10),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(text=words.filter(lambda t: not t.lstrip().startswith("/")), entities=GROUP_ENTITIES)
def test_group_talk_not_for_the_buddy_is_dropped(text: str, entities: list[dict]) -> None:
    """In a group, a message with no command, no mention of the buddy and no reply to it is
    not even stored; senders that are no person never become learners."""
    member = {"id": 71, "is_bot": False, "first_name": "A"}
    group = {"id": -100123, "type": "supergroup", "title": "G"}
    telegram = {
        "update_id": 1,
        "message": {
            "message_id": 3,
            "from": member,
            "chat": group,
            "date": 1,
            "text": text,
            "entities": entities,
        },
    }
    anonymous = {
        "update_id": 2,
        "message": {
            "message_id": 4,
            "chat": group,
            "date": 1,
            "from": {"id": 1087968824, "is_bot": True, "first_name": "Group"},
            "sender_chat": group,
            "text": "/help " + text,
        },
    }
    line = {
        "events": [
            {
                "type": "message",
                "mode": "active",
                "timestamp": 1,
                "webhookEventId": "01Y",
                "replyToken": "r",
                "source": {"type": "group", "groupId": "C1", "userId": "U7"},
                "message": {
                    "id": "5",
                    "type": "text",
                    "text": text,
                    "quoteToken": "q",
                    "mention": {
                        "mentionees": [
                            {
                                "index": 0,
                                "length": 1,
                                "type": "user",
                                "userId": "U8",
                                "isSelf": False,
                            }
                        ]
                    },
                },
            }
        ]
    }
    whatsapp = whatsapp_envelope(
        {"messages": [{**whatsapp_message("text", {"body": text}), "group_id": "Y2FwaV9ncm91cDox"}]}
    )
    assert CHANNELS[1].parse(json.dumps(telegram).encode()) == []
    assert CHANNELS[1].parse(json.dumps(anonymous).encode()) == []
    assert CHANNELS[2].parse(json.dumps(line).encode()) == []
    assert CHANNELS[0].parse(json.dumps(whatsapp).encode()) == []


@settings(max_examples=300, deadline=None)
@given(text=words.filter(lambda t: not t.lstrip().startswith("/")))
def test_a_turn_says_what_the_learner_sent(text: str) -> None:
    """The text a turn carries is the learner's own, word for word, on every platform."""
    bodies = [
        (
            CHANNELS[0],
            whatsapp_envelope(
                {
                    "messages": [whatsapp_message("text", {"body": text})],
                    "contacts": [{"wa_id": "5511987654321"}],
                }
            ),
        ),
        (CHANNELS[1], telegram_update({"text": text})),
        (CHANNELS[2], {"events": [line_event({"id": "1", "type": "text", "text": text})]}),
    ]
    for channel, body in bodies:
        [event] = channel.parse(json.dumps(body).encode())
        assert event.kind.is_turn and event.text == text
