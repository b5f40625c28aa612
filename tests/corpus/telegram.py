"""Telegram Bot API updates as Telegram posts them to a webhook: private chats, groups,
supergroups and forum topics, every message content type, edits, reactions, albums, service
messages, and the update types that are not messages at all.

Shapes after the Bot API reference and python-telegram-bot's types (``Update``, ``Message``,
``MessageReactionUpdated``, ``ChatMemberUpdated``, ``CallbackQuery``; its ``ChatID`` constants
for @GroupAnonymousBot 1087968824, the Telegram service account 777000 and @Channel_Bot
136817688); text and ids are ours. The bot is the fake's: id 123456789, @languagebuddy_test_bot.
Each case has its own learner (user id 71000000NN).
"""

from __future__ import annotations

from typing import Any

from tests.corpus import Case, Reply

BOT = {
    "id": 123456789,
    "is_bot": True,
    "first_name": "LanguageBuddy",
    "username": "languagebuddy_test_bot",
}
GROUP = {"id": -4712345601, "title": "Clase de español", "type": "group"}
SUPERGROUP = {"id": -1001712345602, "title": "Escola de línguas", "type": "supergroup"}
FORUM = {"id": -1001712345603, "title": "Language club", "type": "supergroup", "is_forum": True}
DATE = 1764680400


def uid(n: int) -> int:
    return 7100000000 + n


def user(n: int, first: str = "Kenji", lang: str | None = "es") -> dict[str, Any]:
    sender: dict[str, Any] = {"id": uid(n), "is_bot": False, "first_name": first}
    if lang:
        sender["language_code"] = lang
    return sender


def private(n: int) -> dict[str, Any]:
    return {"id": uid(n), "first_name": "Kenji", "type": "private"}


def update(n: int, key: str = "message", **fields: Any) -> dict[str, Any]:
    """An update of learner ``n`` (update_id 8100000NN) in their private chat, unless the
    fields name another ``chat``."""
    content = {"message_id": 100 + n, "from": user(n), "chat": private(n), "date": DATE, **fields}
    return {"update_id": 810000000 + n, key: content}


def in_private(n: int) -> dict[str, Any]:
    return {"chat_id": uid(n)}


def in_group(chat: dict[str, Any], n: int, message_id: int | None = None, **more: Any) -> dict:
    reply = {"message_id": message_id or 100 + n, "allow_sending_without_reply": True}
    return {"chat_id": chat["id"], "reply_parameters": reply, **more}


def bot_message(message_id: int, chat: dict[str, Any], text: str) -> dict[str, Any]:
    return {"message_id": message_id, "from": BOT, "chat": chat, "date": DATE - 60, "text": text}


def photo_sizes(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "file_id": f"{prefix}-s",
            "file_unique_id": f"{prefix}s",
            "file_size": 1621,
            "width": 90,
            "height": 68,
        },
        {
            "file_id": f"{prefix}-m",
            "file_unique_id": f"{prefix}m",
            "file_size": 24503,
            "width": 320,
            "height": 240,
        },
        {
            "file_id": f"{prefix}-x",
            "file_unique_id": f"{prefix}x",
            "file_size": 98764,
            "width": 1280,
            "height": 960,
        },
    ]


def unsupported(n: int, name: str, kind: str, **fields: Any) -> Case:
    return Case(
        name,
        (update(n, **fields),),
        ({"kind": "unsupported", "unsupported_type": kind, "user_id": str(uid(n))},),
        Reply(in_private(n), phrase="unsupported", lang="es"),
    )


def silent(n: int, name: str, key: str, content: dict[str, Any]) -> Case:
    return Case(name, ({"update_id": 810000000 + n, key: content},), ())


CASES: list[Case] = [
    # --- private chats -----------------------------------------------------------------
    Case(
        "text",
        (update(1, text="Hola, ¿cómo estás?"),),
        (
            {
                "kind": "text",
                "text": "Hola, ¿cómo estás?",
                "user_id": str(uid(1)),
                "chat_id": None,
                "event_id": "810000001",
                "message_id": "101",
                "language_hint": "es",
                "display_name": "Kenji",
                "sent_at": float(DATE),
            },
        ),
        Reply(in_private(1), sees=("cómo estás",)),
    ),
    Case(
        "text_with_formatting_entities",
        (
            update(
                2,
                text="Mira esto: https://rae.es es muy útil",
                entities=[{"offset": 11, "length": 14, "type": "url"}],
                link_preview_options={"is_disabled": True},
            ),
        ),
        ({"kind": "text", "text": "Mira esto: https://rae.es es muy útil"},),
        Reply(in_private(2), sees=("muy útil",)),
    ),
    Case(
        "help_command",
        (update(3, text="/help", entities=[{"offset": 0, "length": 5, "type": "bot_command"}]),),
        ({"kind": "text", "text": "/help"},),
        Reply(in_private(3), phrase="help", lang="es"),
    ),
    Case(
        "reply_to_the_buddy",
        (
            update(
                4,
                text="No entiendo la palabra «sobremesa»",
                reply_to_message=bot_message(90, private(4), "¿Qué hiciste en la sobremesa?"),
            ),
        ),
        ({"kind": "text", "reply_to_message_id": "90"},),
        Reply(in_private(4), sees=("sobremesa",)),
    ),
    Case(
        "forwarded_from_a_user",
        (
            update(
                5,
                text="¡Nos vemos el sábado!",
                forward_origin={
                    "type": "user",
                    "sender_user": {"id": 7200000001, "is_bot": False, "first_name": "Lucía"},
                    "date": DATE - 3600,
                },
            ),
        ),
        ({"kind": "text", "forwarded": True},),
        Reply(in_private(5), sees=("Forwarded", "el sábado")),
    ),
    Case(
        "photo_with_caption",
        (update(6, photo=photo_sizes("AgACAgQAAxkBAAI6"), caption="Mi perro Toby"),),
        (
            {
                "kind": "image",
                "media_id": "AgACAgQAAxkBAAI6-x",
                "media_size": 98764,
                "caption": "Mi perro Toby",
                "album_id": None,
            },
        ),
        Reply(in_private(6), sees=("Mi perro Toby",), images=1),
        media={"AgACAgQAAxkBAAI6-x": "photo"},
    ),
    Case(
        "photo_without_caption",
        (update(7, photo=photo_sizes("AgACAgQAAxkBAAI7")),),
        ({"kind": "image", "media_id": "AgACAgQAAxkBAAI7-x", "caption": None},),
        Reply(in_private(7), sees=("without a caption",), images=1),
        media={"AgACAgQAAxkBAAI7-x": "photo"},
    ),
    Case(
        "image_sent_as_a_document",
        (
            update(
                8,
                document={
                    "file_name": "horario.png",
                    "mime_type": "image/png",
                    "file_id": "BQACAgQAAxkBAAI8",
                    "file_unique_id": "AgADs8",
                    "file_size": 45210,
                },
                caption="Mi horario",
            ),
        ),
        ({"kind": "image", "media_id": "BQACAgQAAxkBAAI8", "media_mime": "image/png"},),
        Reply(in_private(8), sees=("Mi horario",), images=1),
        media={"BQACAgQAAxkBAAI8": "png"},
    ),
    unsupported(
        9,
        "document_pdf",
        "document",
        document={
            "file_name": "deberes.pdf",
            "mime_type": "application/pdf",
            "file_id": "BQACAgQAAxkBAAI9",
            "file_unique_id": "AgADs9",
            "file_size": 120331,
        },
    ),
    Case(
        "voice",
        (
            update(
                10,
                voice={
                    "duration": 4,
                    "mime_type": "audio/ogg",
                    "file_id": "AwACAgQAAxkBAAJA",
                    "file_unique_id": "AgADtA",
                    "file_size": 9823,
                },
            ),
        ),
        ({"kind": "voice", "media_id": "AwACAgQAAxkBAAJA", "media_duration_s": 4.0},),
        stack=False,
        note="voice end to end (You said, reply, voice note): tests/integration/test_voice_e2e.py",
    ),
    Case(
        "audio_file",
        (
            update(
                11,
                audio={
                    "duration": 31,
                    "file_name": "cancion.mp3",
                    "mime_type": "audio/mpeg",
                    "title": "Canción",
                    "performer": "Grupo",
                    "file_id": "CQACAgQAAxkBAAJB",
                    "file_unique_id": "AgADtB",
                    "file_size": 512000,
                },
            ),
        ),
        ({"kind": "voice", "media_mime": "audio/mpeg", "media_size": 512000},),
        stack=False,
        note="voice end to end (You said, reply, voice note): tests/integration/test_voice_e2e.py",
    ),
    unsupported(
        12,
        "video_note",
        "video_note",
        video_note={
            "duration": 6,
            "length": 384,
            "file_id": "DQACAgQAAxkBAAJC",
            "file_unique_id": "AgADtC",
            "file_size": 301234,
        },
    ),
    unsupported(
        13,
        "sticker",
        "sticker",
        sticker={
            "width": 512,
            "height": 512,
            "emoji": "😂",
            "set_name": "HotCherry",
            "is_animated": False,
            "is_video": False,
            "type": "regular",
            "file_id": "CAACAgIAAxkBAAJD",
            "file_unique_id": "AgADtD",
            "file_size": 24512,
        },
    ),
    unsupported(
        14,
        "animation_gif",
        "animation",
        animation={
            "file_name": "risa.mp4",
            "mime_type": "video/mp4",
            "duration": 3,
            "width": 320,
            "height": 240,
            "file_id": "CgACAgQAAxkBAAJE",
            "file_unique_id": "AgADtE",
            "file_size": 88120,
        },
        document={
            "file_name": "risa.mp4",
            "mime_type": "video/mp4",
            "file_id": "CgACAgQAAxkBAAJE",
            "file_unique_id": "AgADtE",
            "file_size": 88120,
        },
    ),
    unsupported(15, "location", "location", location={"latitude": 35.6595, "longitude": 139.7005}),
    unsupported(
        16,
        "contact",
        "contact",
        contact={"phone_number": "+34600000000", "first_name": "Lucía", "user_id": 7200000002},
    ),
    unsupported(
        17,
        "poll",
        "poll",
        poll={
            "id": "5208432223021318150",
            "question": "¿Té o café?",
            "options": [{"text": "Té", "voter_count": 0}, {"text": "Café", "voter_count": 0}],
            "total_voter_count": 0,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
        },
    ),
    unsupported(18, "dice", "dice", dice={"emoji": "🎲", "value": 4}),
    # --- edits and reactions: no reply -------------------------------------------------
    Case(
        "edited_text",
        (update(19, "edited_message", text="Yo fui al mercado", edit_date=DATE + 30),),
        (
            {
                "kind": "edit",
                "target_message_id": "119",
                "text": "Yo fui al mercado",
                "sent_at": float(DATE + 30),
            },
        ),
    ),
    Case(
        "edited_caption",
        (
            update(
                20,
                "edited_message",
                photo=photo_sizes("AgACAgQAAxkBAAJF"),
                caption="Mi gata, no mi perro",
                edit_date=DATE + 40,
            ),
        ),
        ({"kind": "edit", "caption": "Mi gata, no mi perro", "text": None},),
    ),
    Case(
        "reaction",
        (
            {
                "update_id": 810000021,
                "message_reaction": {
                    "chat": private(21),
                    "message_id": 1021,
                    "user": user(21),
                    "date": DATE,
                    "old_reaction": [],
                    "new_reaction": [{"type": "emoji", "emoji": "👍"}],
                },
            },
        ),
        ({"kind": "reaction", "target_message_id": "1021", "text": "👍"},),
    ),
    Case(
        "reaction_removed",
        (
            {
                "update_id": 810000022,
                "message_reaction": {
                    "chat": private(22),
                    "message_id": 1022,
                    "user": user(22),
                    "date": DATE,
                    "old_reaction": [{"type": "emoji", "emoji": "❤"}],
                    "new_reaction": [],
                },
            },
        ),
        ({"kind": "reaction", "text": None},),
    ),
    silent(
        23,
        "anonymous_reaction_count",
        "message_reaction_count",
        {
            "chat": SUPERGROUP,
            "message_id": 1023,
            "date": DATE,
            "reactions": [{"type": {"type": "emoji", "emoji": "🔥"}, "total_count": 3}],
        },
    ),
    # --- not messages at all -----------------------------------------------------------
    silent(
        24,
        "channel_post",
        "channel_post",
        {
            "message_id": 55,
            "sender_chat": {"id": -1001700000099, "title": "Noticias", "type": "channel"},
            "chat": {"id": -1001700000099, "title": "Noticias", "type": "channel"},
            "date": DATE,
            "text": "Nueva lección publicada",
        },
    ),
    silent(
        25,
        "edited_channel_post",
        "edited_channel_post",
        {
            "message_id": 55,
            "sender_chat": {"id": -1001700000099, "title": "Noticias", "type": "channel"},
            "chat": {"id": -1001700000099, "title": "Noticias", "type": "channel"},
            "date": DATE,
            "edit_date": DATE + 5,
            "text": "Nueva lección publicada (corregida)",
        },
    ),
    silent(
        26,
        "callback_query",
        "callback_query",
        {
            "id": "4382bfdwdsb323b2d9",
            "from": user(26),
            "message": bot_message(126, private(26), "Elige:"),
            "chat_instance": "-5366243123123123",
            "data": "level:B1",
        },
    ),
    silent(
        27,
        "my_chat_member_bot_added_to_a_group",
        "my_chat_member",
        {
            "chat": GROUP,
            "from": user(27),
            "date": DATE,
            "old_chat_member": {"user": BOT, "status": "left"},
            "new_chat_member": {"user": BOT, "status": "member"},
        },
    ),
    silent(
        28,
        "chat_member_joined",
        "chat_member",
        {
            "chat": SUPERGROUP,
            "from": user(28),
            "date": DATE,
            "old_chat_member": {"user": user(28), "status": "left"},
            "new_chat_member": {"user": user(28), "status": "member"},
        },
    ),
    silent(
        29,
        "inline_query",
        "inline_query",
        {"id": "88812", "from": user(29), "query": "hola", "offset": "", "chat_type": "sender"},
    ),
    silent(
        30,
        "chat_join_request",
        "chat_join_request",
        {"chat": SUPERGROUP, "from": user(30), "user_chat_id": uid(30), "date": DATE},
    ),
    silent(
        31,
        "business_message",
        "business_message",
        {
            "business_connection_id": "BqkmE6GfKEgAAAAg",
            "message_id": 31,
            "from": user(31),
            "chat": private(31),
            "date": DATE,
            "text": "Hola negocio",
        },
    ),
    # --- groups, supergroups and forum topics -------------------------------------------
    Case(
        "group_chatter_is_ignored",
        (update(32, chat=GROUP, text="¿Quién trae los apuntes mañana?"),),
        (),
    ),
    Case(
        "group_mention_of_the_buddy",
        (
            update(
                33,
                chat=GROUP,
                text="@languagebuddy_test_bot ¿cómo se dice «deadline»?",
                entities=[{"offset": 0, "length": 23, "type": "mention"}],
            ),
        ),
        (
            {
                "kind": "text",
                "user_id": str(uid(33)),
                "chat_id": str(GROUP["id"]),
                "addressed": None,
                "extra": {"chat_type": "group", "mentions": ["languagebuddy_test_bot"]},
            },
        ),
        Reply(in_group(GROUP, 33), sees=("deadline",)),
    ),
    Case(
        "group_mention_of_someone_else",
        (
            update(
                34,
                chat=GROUP,
                text="@maria_lopez ¿vienes?",
                entities=[{"offset": 0, "length": 12, "type": "mention"}],
            ),
        ),
        ({"kind": "text", "extra": {"chat_type": "group", "mentions": ["maria_lopez"]}},),
        note="kept by parse (a username only getMe can match), dropped by the channel",
    ),
    Case(
        "group_command_with_the_buddys_name",
        (
            update(
                35,
                chat=SUPERGROUP,
                text="/help@languagebuddy_test_bot",
                entities=[{"offset": 0, "length": 28, "type": "bot_command"}],
            ),
        ),
        (
            {
                "kind": "text",
                "text": "/help",
                "extra": {"chat_type": "supergroup", "command_for": "languagebuddy_test_bot"},
            },
        ),
        Reply(in_group(SUPERGROUP, 35), phrase="help", lang="es"),
    ),
    Case(
        "group_command_for_another_bot",
        (
            update(
                36,
                chat=SUPERGROUP,
                text="/help@other_quiz_bot",
                entities=[{"offset": 0, "length": 20, "type": "bot_command"}],
            ),
        ),
        ({"kind": "text", "extra": {"chat_type": "supergroup", "command_for": "other_quiz_bot"}},),
    ),
    Case(
        "group_reply_to_the_buddy",
        (
            update(
                37,
                chat=SUPERGROUP,
                text="Creo que es «el plazo»",
                reply_to_message=bot_message(4001, SUPERGROUP, "¿Cómo se dice deadline?"),
            ),
        ),
        ({"kind": "text", "addressed": True, "reply_to_message_id": "4001"},),
        Reply(in_group(SUPERGROUP, 37), sees=("el plazo",)),
    ),
    Case(
        "group_text_mention_of_the_buddy",
        (
            update(
                38,
                chat=GROUP,
                text="Buddy, corrige: yo sabo nadar",
                entities=[{"offset": 0, "length": 5, "type": "text_mention", "user": BOT}],
            ),
        ),
        ({"kind": "text", "addressed": True},),
        Reply(in_group(GROUP, 38), sees=("yo sabo nadar",)),
    ),
    Case(
        "forum_topic_mention",
        (
            update(
                39,
                chat=FORUM,
                message_thread_id=5,
                is_topic_message=True,
                reply_to_message={
                    "message_id": 5,
                    "from": user(1),
                    "chat": FORUM,
                    "date": DATE - 86400,
                    "message_thread_id": 5,
                    "forum_topic_created": {"name": "Español", "icon_color": 7322096},
                    "is_topic_message": True,
                },
                text="@languagebuddy_test_bot ¿es «la agua» o «el agua»?",
                entities=[{"offset": 0, "length": 23, "type": "mention"}],
            ),
        ),
        (
            {
                "kind": "text",
                "chat_id": str(FORUM["id"]),
                "reply_to_message_id": None,
                "extra": {
                    "chat_type": "supergroup",
                    "thread_id": "5",
                    "mentions": ["languagebuddy_test_bot"],
                },
            },
        ),
        Reply(in_group(FORUM, 39, message_thread_id=5), sees=("el agua",)),
    ),
    Case(
        "forum_topic_chatter_is_ignored",
        (
            update(
                40,
                chat=FORUM,
                message_thread_id=5,
                is_topic_message=True,
                reply_to_message={
                    "message_id": 5,
                    "from": user(1),
                    "chat": FORUM,
                    "date": DATE - 86400,
                    "message_thread_id": 5,
                    "forum_topic_created": {"name": "Español", "icon_color": 7322096},
                    "is_topic_message": True,
                },
                text="Hoy no puedo venir",
            ),
        ),
        (),
    ),
    Case(
        "anonymous_admin",
        (
            {
                "update_id": 810000041,
                "message": {
                    "message_id": 141,
                    "from": {
                        "id": 1087968824,
                        "is_bot": True,
                        "first_name": "Group",
                        "username": "GroupAnonymousBot",
                    },
                    "sender_chat": SUPERGROUP,
                    "chat": SUPERGROUP,
                    "date": DATE,
                    "text": "@languagebuddy_test_bot hola a todos",
                    "entities": [{"offset": 0, "length": 23, "type": "mention"}],
                },
            },
        ),
        (),
    ),
    Case(
        "automatic_forward_from_the_linked_channel",
        (
            {
                "update_id": 810000042,
                "message": {
                    "message_id": 142,
                    "from": {"id": 777000, "is_bot": False, "first_name": "Telegram"},
                    "sender_chat": {"id": -1001700000099, "title": "Noticias", "type": "channel"},
                    "chat": SUPERGROUP,
                    "date": DATE,
                    "is_automatic_forward": True,
                    "forward_origin": {
                        "type": "channel",
                        "chat": {"id": -1001700000099, "title": "Noticias", "type": "channel"},
                        "message_id": 55,
                        "date": DATE - 10,
                    },
                    "text": "/help",
                    "entities": [{"offset": 0, "length": 5, "type": "bot_command"}],
                },
            },
        ),
        (),
    ),
    Case(
        "message_on_behalf_of_a_channel",
        (
            {
                "update_id": 810000043,
                "message": {
                    "message_id": 143,
                    "from": {
                        "id": 136817688,
                        "is_bot": True,
                        "first_name": "Channel",
                        "username": "Channel_Bot",
                    },
                    "sender_chat": {"id": -1001700000099, "title": "Noticias", "type": "channel"},
                    "chat": SUPERGROUP,
                    "date": DATE,
                    "text": "/help",
                    "entities": [{"offset": 0, "length": 5, "type": "bot_command"}],
                },
            },
        ),
        (),
    ),
    Case(
        "another_bot_replying_to_the_buddy",
        (
            {
                "update_id": 810000044,
                "message": {
                    "message_id": 144,
                    "from": {"id": 5550001, "is_bot": True, "first_name": "Quiz"},
                    "chat": GROUP,
                    "date": DATE,
                    "text": "Respuesta automática",
                    "reply_to_message": bot_message(4002, GROUP, "¿Alguien más?"),
                },
            },
        ),
        (),
    ),
    Case(
        "new_chat_members_service_message",
        (
            update(
                45,
                chat=GROUP,
                new_chat_participant=user(46),
                new_chat_member=user(46),
                new_chat_members=[user(46)],
            ),
        ),
        (),
    ),
    Case(
        "pinned_message_service_message",
        (update(47, pinned_message=bot_message(4003, private(47), "Tu plan de estudio")),),
        (),
    ),
    Case(
        "forum_topic_created_service_message",
        (
            update(
                48,
                chat=FORUM,
                message_thread_id=148,
                is_topic_message=True,
                forum_topic_created={"name": "Francés", "icon_color": 16766590},
            ),
        ),
        (),
    ),
    # --- albums and redeliveries -------------------------------------------------------
    Case(
        "album_of_two_photos_is_one_lesson",
        (
            update(
                49,
                photo=photo_sizes("AgACAgQAAxkBAAJ1"),
                media_group_id="13985743218512345",
                caption="Mi viaje a Kioto",
            ),
            {
                "update_id": 810000050,
                "message": {
                    "message_id": 150,
                    "from": user(49),
                    "chat": private(49),
                    "date": DATE,
                    "media_group_id": "13985743218512345",
                    "photo": photo_sizes("AgACAgQAAxkBAAJ2"),
                },
            },
        ),
        (
            {"kind": "image", "album_id": "13985743218512345", "caption": "Mi viaje a Kioto"},
            {"kind": "image", "album_id": "13985743218512345", "caption": None},
        ),
        Reply(in_private(49), sees=("Mi viaje a Kioto",), images=2),
        media={"AgACAgQAAxkBAAJ1-x": "photo", "AgACAgQAAxkBAAJ2-x": "photo"},
    ),
    Case(
        "redelivered_update",
        (update(51, text="Esto llega dos veces"),),
        ({"kind": "text", "event_id": "810000051"},),
        Reply(in_private(51), sees=("llega dos veces",)),
        deliveries=3,
    ),
]
