"""LINE Messaging API webhook bodies (``{"destination", "events": [...]}``): every message
type, content from LINE and from external providers, image sets, one-to-one chats, groups and
rooms, unsend and edits, redeliveries, and every non-message event type.

Shapes after the Messaging API reference and line-bot-sdk-python's ``tests/v3/text/webhook.json``
and ``linebot/v3/webhooks/models`` (mention with ``isSelf``, ``quotedMessageId``,
``contentProvider``, ``imageSet``, ``messageEdited``, ``unsend``); text and ids are ours. Each
case has its own learner (userId U…NN) and reply token.
"""

from __future__ import annotations

from typing import Any

from tests.corpus import CONTENT_HOST, Case, Reply

DESTINATION = "U0123456789abcdef0123456789abcdef"
GROUP_ID = "Ca56f94637cc4347f90a25382909b24b9"
ROOM_ID = "Ra8dbf4673c4c812cd491258042226c99"
TIME = 1764680400000


def uid(n: int) -> str:
    return f"U4af4980629a1b2c3d4e5f6a7b8c9d{n:03d}"


def token(n: int, k: int = 0) -> str:
    return f"nHuyWiB7yP5Zw52FIkcQobQuGDX{n:03d}{k}"


def mid(n: int, k: int = 0) -> str:
    return f"5{n:03d}{k:02d}7898262530"


def source(n: int, chat: str | None = None) -> dict[str, Any]:
    if chat is None:
        return {"type": "user", "userId": uid(n)}
    kind = "group" if chat.startswith("C") else "room"
    return {"type": kind, f"{kind}Id": chat, "userId": uid(n)}


def event(
    n: int,
    kind: str = "message",
    *,
    k: int = 0,
    chat: str | None = None,
    reply_token: bool = True,
    redelivery: bool = False,
    **content: Any,
) -> dict[str, Any]:
    item: dict[str, Any] = {"type": kind, "mode": "active", "timestamp": TIME + k}
    item["source"] = source(n, chat)
    item["webhookEventId"] = f"01JDX{n:03d}{k:02d}EXAMPLE0000000000"
    item["deliveryContext"] = {"isRedelivery": redelivery}
    if reply_token:
        item["replyToken"] = token(n, k)
    item.update(content)
    return item


def text(body: str, n: int, k: int = 0, **more: Any) -> dict[str, Any]:
    return {
        "id": mid(n, k),
        "type": "text",
        "quoteToken": f"q3Plxr4AgKd{n:03d}{k}",
        "text": body,
        **more,
    }


def body(*events: dict[str, Any]) -> dict[str, Any]:
    return {"destination": DESTINATION, "events": list(events)}


def replied(n: int, k: int = 0, quote: str | None = None) -> dict[str, Any]:
    """Answered with the event's reply token; in a group the reply quotes the learner."""
    return {"replyToken": token(n, k), "_quote": quote}


def unsupported(n: int, name: str, message: dict[str, Any], kind: str) -> Case:
    return Case(
        name,
        (body(event(n, message=message)),),
        ({"kind": "unsupported", "unsupported_type": kind, "user_id": uid(n)},),
        Reply(replied(n), phrase="unsupported"),
    )


def silent(n: int, name: str, kind: str, **content: Any) -> Case:
    return Case(name, (body(event(n, kind, **content)),), ())


SELF = {"index": 0, "length": 6, "type": "user", "userId": DESTINATION, "isSelf": True}

CASES: list[Case] = [
    # --- one-to-one ----------------------------------------------------------------------
    Case(
        "text",
        (body(event(1, message=text("こんにちは、日本語を練習したいです", 1))),),
        (
            {
                "kind": "text",
                "text": "こんにちは、日本語を練習したいです",
                "user_id": uid(1),
                "chat_id": None,
                "reply_token": token(1),
                "message_id": mid(1),
                "sent_at": TIME / 1000,
            },
        ),
        Reply(replied(1), sees=("練習したいです",)),
    ),
    Case(
        "text_with_line_emoji",
        (
            body(
                event(
                    2,
                    message=text(
                        "$ 今日は暑いですね",
                        2,
                        emojis=[
                            {
                                "index": 0,
                                "length": 1,
                                "productId": "5ac1bfd5040ab15980c9b435",
                                "emojiId": "001",
                            }
                        ],
                    ),
                )
            ),
        ),
        ({"kind": "text", "text": "$ 今日は暑いですね"},),
        Reply(replied(2), sees=("暑いですね",)),
    ),
    Case(
        "text_quoting_a_message",
        (
            body(
                event(
                    3, message=text("これはどういう意味？", 3, quotedMessageId="468789577898262599")
                )
            ),
        ),
        ({"kind": "text", "reply_to_message_id": "468789577898262599"},),
        Reply(replied(3), sees=("どういう意味",)),
    ),
    Case(
        "redelivered_text_is_pushed",
        (body(event(4, message=text("もう一度送ります", 4), redelivery=True)),),
        ({"kind": "text", "extra": {"redelivery": True, "quote_token": "q3Plxr4AgKd0040"}},),
        Reply({"to": uid(4)}, sees=("もう一度送ります",)),
        deliveries=2,
        note="a redelivered event's reply token may be spent: the reply is pushed",
    ),
    Case(
        "image_from_line",
        (
            body(
                event(
                    5,
                    message={
                        "id": mid(5),
                        "type": "image",
                        "quoteToken": "q5",
                        "contentProvider": {"type": "line"},
                    },
                )
            ),
        ),
        (
            {
                "kind": "image",
                "media_id": mid(5),
                "album_id": None,
                "extra": {"redelivery": False, "quote_token": "q5"},
            },
        ),
        Reply(replied(5), sees=("without a caption",), images=1),
        media={mid(5): "photo"},
    ),
    Case(
        "image_from_an_external_provider",
        (
            body(
                event(
                    6,
                    message={
                        "id": mid(6),
                        "type": "image",
                        "quoteToken": "q6",
                        "contentProvider": {
                            "type": "external",
                            "originalContentUrl": f"{CONTENT_HOST}/media/original-6.jpg",
                            "previewImageUrl": f"{CONTENT_HOST}/media/preview-6.jpg",
                        },
                    },
                )
            ),
        ),
        (
            {
                "kind": "image",
                "extra": {
                    "redelivery": False,
                    "quote_token": "q6",
                    "content_url": f"{CONTENT_HOST}/media/original-6.jpg",
                },
            },
        ),
        Reply(replied(6), images=1),
        external={"original-6.jpg": "photo"},
    ),
    Case(
        "image_from_an_external_provider_over_plain_http_is_refused",
        (
            body(
                event(
                    7,
                    message={
                        "id": mid(7),
                        "type": "image",
                        "quoteToken": "q7",
                        "contentProvider": {
                            "type": "external",
                            "originalContentUrl": "http://images.example.net/cat.jpg",
                            "previewImageUrl": "http://images.example.net/cat-s.jpg",
                        },
                    },
                )
            ),
        ),
        (
            {
                "kind": "image",
                "extra": {
                    "redelivery": False,
                    "quote_token": "q7",
                    "content_url": "http://images.example.net/cat.jpg",
                },
            },
        ),
        Reply(replied(7), phrase="image_download_failed"),
    ),
    Case(
        "image_set_in_one_body",
        (
            body(
                event(
                    8,
                    k=0,
                    message={
                        "id": mid(8, 0),
                        "type": "image",
                        "quoteToken": "q80",
                        "contentProvider": {"type": "line"},
                        "imageSet": {"id": "E005D41A7288F41B6558", "index": 1, "total": 2},
                    },
                ),
                event(
                    8,
                    k=1,
                    message={
                        "id": mid(8, 1),
                        "type": "image",
                        "quoteToken": "q81",
                        "contentProvider": {"type": "line"},
                        "imageSet": {"id": "E005D41A7288F41B6558", "index": 2, "total": 2},
                    },
                ),
            ),
        ),
        (
            {
                "kind": "image",
                "album_id": "E005D41A7288F41B6558",
                "album_index": 1,
                "album_size": 2,
            },
            {
                "kind": "image",
                "album_id": "E005D41A7288F41B6558",
                "album_index": 2,
                "album_size": 2,
            },
        ),
        Reply(replied(8, 0), images=2, sees=("2 photos",)),
        media={mid(8, 0): "photo", mid(8, 1): "photo"},
    ),
    Case(
        "image_set_in_two_bodies_second_first",
        (
            body(
                event(
                    9,
                    k=1,
                    message={
                        "id": mid(9, 1),
                        "type": "image",
                        "quoteToken": "q91",
                        "contentProvider": {"type": "line"},
                        "imageSet": {"id": "E005D41A7288F41B6559", "index": 2, "total": 2},
                    },
                )
            ),
            body(
                event(
                    9,
                    k=0,
                    message={
                        "id": mid(9, 0),
                        "type": "image",
                        "quoteToken": "q90",
                        "contentProvider": {"type": "line"},
                        "imageSet": {"id": "E005D41A7288F41B6559", "index": 1, "total": 2},
                    },
                )
            ),
        ),
        (
            {"kind": "image", "album_index": 2},
            {"kind": "image", "album_index": 1},
        ),
        Reply(replied(9, 1), images=2, sees=("2 photos",)),
        media={mid(9, 0): "photo", mid(9, 1): "photo"},
    ),
    unsupported(
        10,
        "video",
        {
            "id": mid(10),
            "type": "video",
            "quoteToken": "q10",
            "duration": 60000,
            "contentProvider": {"type": "line"},
        },
        "video",
    ),
    unsupported(
        11,
        "video_from_an_external_provider",
        {
            "id": mid(11),
            "type": "video",
            "quoteToken": "q11",
            "duration": 12000,
            "contentProvider": {
                "type": "external",
                "originalContentUrl": "https://example.com/v.mp4",
                "previewImageUrl": "https://example.com/v.jpg",
            },
        },
        "video",
    ),
    Case(
        "audio",
        (
            body(
                event(
                    12,
                    message={
                        "id": mid(12),
                        "type": "audio",
                        "duration": 4200,
                        "contentProvider": {"type": "line"},
                    },
                )
            ),
        ),
        (
            {
                "kind": "voice",
                "media_id": mid(12),
                "media_duration_s": 4.2,
                "media_mime": "audio/mp4",
            },
        ),
        stack=False,
        note="voice end to end (You said, reply, voice note): tests/integration/test_voice_e2e.py",
    ),
    Case(
        "audio_from_an_external_provider",
        (
            body(
                event(
                    13,
                    message={
                        "id": mid(13),
                        "type": "audio",
                        "duration": 60000,
                        "contentProvider": {
                            "type": "external",
                            "originalContentUrl": "https://example.com/a.m4a",
                        },
                    },
                )
            ),
        ),
        (
            {
                "kind": "voice",
                "extra": {"redelivery": False, "content_url": "https://example.com/a.m4a"},
            },
        ),
        stack=False,
        note="voice end to end: tests/integration/test_voice_e2e.py; external content (one "
        "download for every kind): tests/integration/test_channel_traffic.py",
    ),
    unsupported(
        14,
        "file",
        {"id": mid(14), "type": "file", "fileName": "宿題.pdf", "fileSize": 2138},
        "file",
    ),
    unsupported(
        15,
        "location",
        {
            "id": mid(15),
            "type": "location",
            "title": "渋谷駅",
            "address": "東京都渋谷区",
            "latitude": 35.658034,
            "longitude": 139.701636,
        },
        "location",
    ),
    unsupported(
        16,
        "sticker",
        {
            "id": mid(16),
            "type": "sticker",
            "quoteToken": "q16",
            "packageId": "446",
            "stickerId": "1988",
            "stickerResourceType": "STATIC",
            "keywords": ["Happy", "Smile"],
        },
        "sticker",
    ),
    # --- events that are not messages ----------------------------------------------------
    silent(17, "follow", "follow", follow={"isUnblocked": False}),
    silent(18, "unfollow", "unfollow", reply_token=False),
    Case(
        "join",
        (body({**event(19, "join"), "source": {"type": "group", "groupId": GROUP_ID}}),),
        (),
    ),
    Case(
        "leave",
        (
            body(
                {
                    **event(20, "leave", reply_token=False),
                    "source": {"type": "group", "groupId": GROUP_ID},
                }
            ),
        ),
        (),
    ),
    Case(
        "member_joined",
        (
            body(
                {
                    **event(21, "memberJoined"),
                    "source": {"type": "group", "groupId": GROUP_ID},
                    "joined": {"members": [{"type": "user", "userId": uid(21)}]},
                }
            ),
        ),
        (),
    ),
    Case(
        "member_left",
        (
            body(
                {
                    **event(22, "memberLeft", reply_token=False),
                    "source": {"type": "group", "groupId": GROUP_ID},
                    "left": {"members": [{"type": "user", "userId": uid(22)}]},
                }
            ),
        ),
        (),
    ),
    silent(
        23,
        "postback_datetime",
        "postback",
        postback={"data": "action=remind", "params": {"datetime": "2026-12-25T09:00"}},
    ),
    silent(
        24,
        "postback_rich_menu",
        "postback",
        postback={
            "data": "menu=practice",
            "params": {"newRichMenuAliasId": "practice", "status": "SUCCESS"},
        },
    ),
    silent(25, "beacon", "beacon", beacon={"hwid": "d41d8cd98f", "type": "enter"}),
    silent(26, "account_link", "accountLink", link={"result": "ok", "nonce": "Vb771wDYtXuam"}),
    silent(
        27,
        "video_play_complete",
        "videoPlayComplete",
        videoPlayComplete={"trackingId": "lesson-video-1"},
    ),
    silent(28, "bot_suspended", "botSuspended", reply_token=False),
    silent(29, "membership", "membership", membership={"type": "joined", "membershipId": 3189}),
    # --- unsend and edits: no reply ----------------------------------------------------
    Case(
        "unsend",
        (body(event(30, "unsend", reply_token=False, unsend={"messageId": mid(30, 1)})),),
        ({"kind": "delete", "target_message_id": mid(30, 1), "user_id": uid(30)},),
    ),
    Case(
        "unsend_in_a_group",
        (
            body(
                event(
                    31,
                    "unsend",
                    chat=GROUP_ID,
                    reply_token=False,
                    unsend={"messageId": mid(31, 1)},
                )
            ),
        ),
        ({"kind": "delete", "chat_id": GROUP_ID, "target_message_id": mid(31, 1)},),
    ),
    Case(
        "message_edited_in_a_group",
        (body(event(32, "messageEdited", chat=GROUP_ID, message=text("@Buddy 私は学生です", 32))),),
        ({"kind": "edit", "target_message_id": mid(32), "text": "@Buddy 私は学生です"},),
    ),
    # --- groups and rooms: the learner is the sender ---------------------------------
    Case(
        "group_chatter_is_ignored",
        (body(event(33, chat=GROUP_ID, message=text("明日の宿題なに？", 33))),),
        (),
    ),
    Case(
        "group_mention_of_the_buddy",
        (
            body(
                event(
                    34,
                    chat=GROUP_ID,
                    message=text(
                        "@Buddy 「締め切り」は英語で何？", 34, mention={"mentionees": [SELF]}
                    ),
                )
            ),
        ),
        (
            {
                "kind": "text",
                "user_id": uid(34),
                "chat_id": GROUP_ID,
                "addressed": True,
                "extra": {"redelivery": False, "quote_token": "q3Plxr4AgKd0340"},
            },
        ),
        Reply(replied(34, quote="q3Plxr4AgKd0340"), sees=("締め切り",)),
    ),
    Case(
        "room_mention_of_the_buddy",
        (
            body(
                event(
                    35,
                    chat=ROOM_ID,
                    message=text("@Buddy おはよう", 35, mention={"mentionees": [SELF]}),
                )
            ),
        ),
        ({"kind": "text", "chat_id": ROOM_ID, "addressed": True},),
        Reply(replied(35, quote="q3Plxr4AgKd0350"), sees=("おはよう",)),
    ),
    Case(
        "group_mention_of_someone_else",
        (
            body(
                event(
                    36,
                    chat=GROUP_ID,
                    message=text(
                        "@Yuki 一緒に行こう",
                        36,
                        mention={
                            "mentionees": [
                                {
                                    "index": 0,
                                    "length": 5,
                                    "type": "user",
                                    "userId": uid(1),
                                    "isSelf": False,
                                }
                            ]
                        },
                    ),
                )
            ),
        ),
        (),
    ),
    Case(
        "group_mention_of_everyone",
        (
            body(
                event(
                    37,
                    chat=GROUP_ID,
                    message=text(
                        "@All 集合！",
                        37,
                        mention={"mentionees": [{"index": 0, "length": 4, "type": "all"}]},
                    ),
                )
            ),
        ),
        (),
    ),
    Case(
        "group_command_for_the_buddy",
        (body(event(38, chat=GROUP_ID, message=text("/help", 38))),),
        ({"kind": "text", "text": "/help", "chat_id": GROUP_ID, "addressed": None},),
        Reply(replied(38, quote="q3Plxr4AgKd0380"), phrase="help"),
    ),
    Case(
        "group_member_without_consent_has_no_id",
        (
            body(
                {
                    **event(
                        39,
                        chat=GROUP_ID,
                        message=text("@Buddy こんにちは", 39, mention={"mentionees": [SELF]}),
                    ),
                    "source": {"type": "group", "groupId": GROUP_ID},
                }
            ),
        ),
        (),
    ),
    Case(
        "standby_mode",
        (body({**event(40, message=text("他のモジュールが担当", 40)), "mode": "standby"}),),
        (),
    ),
    Case("console_verification_has_no_events", (body(),), ()),
    Case(
        "unknown_event_type",
        (body({**event(41, "undefined", reply_token=False), "undefinedField": {"1": 1}}),),
        (),
    ),
    Case(
        "text_and_follow_in_one_body",
        (
            body(
                event(42, "follow", k=0, follow={"isUnblocked": True}),
                event(42, k=1, message=text("よろしくお願いします", 42, 1)),
            ),
        ),
        ({"kind": "text", "text": "よろしくお願いします", "reply_token": token(42, 1)},),
        Reply(replied(42, 1), sees=("よろしく",)),
    ),
]
