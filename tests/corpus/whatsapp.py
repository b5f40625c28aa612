"""WhatsApp Cloud API webhook bodies (``object: whatsapp_business_account``), as Meta sends
them: every message type, statuses with and without errors, system notices, reactions, edits and
revokes, groups, BSUID-only users, multi-entry bodies and the other webhook fields.

Shapes after Meta's webhook reference and pywa's ``tests/data/updates`` (message.json,
message_status.json, system.json, edited_message.json, deleted_message.json,
callback_button.json, callback_selection.json, flow_completion.json); text and ids are ours.
Each case has its own learner (``wa_id`` 55119550000NN) so that their replies never mix.
"""

from __future__ import annotations

from typing import Any

from tests.corpus import Case, Reply

PHONE_NUMBER_ID = "106540352242922"  # the fake WhatsApp's number id
WABA_ID = "102290129340398"
GROUP_ID = "Y2FwaV9ncm91cDoxNTU1MDc4Mzg4MToxMjAzNjM0MDQ2OTQyMzM4MjA"


def wa(n: int) -> str:
    return f"55119550000{n:02d}"


def wamid(n: int, k: int = 0) -> str:
    return f"wamid.HBgNNTUxMTk1NTAwMDA{n:02d}FQIAEhgUM0VCM{k:03d}QzRBQkQ3RTg5RjAA"


def contact(n: int, name: str = "Ana", **more: Any) -> dict[str, Any]:
    return {"profile": {"name": name}, "wa_id": wa(n), **more}


def value(**content: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        **content,
    }


def body(*values: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    """One entry, one change per value (Meta batches several into one body at times)."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": WABA_ID, "changes": [{"value": v, "field": field} for v in values]},
        ],
    }


def message(n: int, kind: str, content: Any = None, k: int = 0, **more: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"from": wa(n), "id": wamid(n, k), "timestamp": "1764680400"}
    item.update(more)
    item["type"] = kind
    if content is not None:
        item[kind] = content
    return item


def one(n: int, kind: str, content: Any = None, **more: Any) -> dict[str, Any]:
    """A body with one message of learner ``n``."""
    return body(value(contacts=[contact(n)], messages=[message(n, kind, content, **more)]))


def to(n: int) -> dict[str, Any]:
    return {"to": wa(n), "recipient_type": "individual"}


def unsupported(n: int, name: str, kind: str, content: Any, kind_seen: str, **more: Any) -> Case:
    return Case(
        name,
        (one(n, kind, content, **more),),
        ({"kind": "unsupported", "unsupported_type": kind_seen, "user_id": wa(n)},),
        Reply(to(n), phrase="unsupported"),
    )


SHA = "4654+8gYzVbAzEGxU6ZRL5Dd3TkYIwOn1OyKXVp9gzE="

CASES: list[Case] = [
    # --- text, with context ------------------------------------------------------------
    Case(
        "text",
        (one(1, "text", {"body": "Hola, quiero practicar español"}),),
        (
            {
                "kind": "text",
                "text": "Hola, quiero practicar español",
                "user_id": wa(1),
                "phone_e164": "+" + wa(1),
                "display_name": "Ana",
                "message_id": wamid(1),
                "sent_at": 1764680400.0,
            },
        ),
        Reply(to(1), sees=("quiero practicar",)),
    ),
    Case(
        "text_replying_to_a_message",
        (
            one(
                2,
                "text",
                {"body": "¿Qué significa madrugar?"},
                context={"from": "15550783881", "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QUQA"},
            ),
        ),
        (
            {
                "kind": "text",
                "reply_to_message_id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QUQA",
                "forwarded": False,
            },
        ),
        Reply(to(2), sees=("madrugar",)),
    ),
    Case(
        "text_forwarded",
        (one(3, "text", {"body": "Mañana llueve en Lisboa"}, context={"forwarded": True}),),
        ({"kind": "text", "forwarded": True, "reply_to_message_id": None},),
        Reply(to(3), sees=("Forwarded", "llueve en Lisboa")),
    ),
    Case(
        "text_forwarded_many_times",
        (
            one(
                4,
                "text",
                {"body": "Compartan este mensaje"},
                context={"frequently_forwarded": True},
            ),
        ),
        ({"kind": "text", "forwarded": True},),
        Reply(to(4), sees=("Compartan",)),
    ),
    Case(
        "text_from_an_ad_referral",
        (
            one(
                5,
                "text",
                {"body": "Quiero clases de inglés"},
                referral={
                    "source_url": "https://fb.me/3cr4Wqqkx",
                    "source_id": "120212345678900123",
                    "source_type": "ad",
                    "headline": "Practica idiomas",
                    "body": "Habla con tu compañero de idiomas",
                    "media_type": "image",
                    "image_url": "https://scontent.xx.fbcdn.net/v/t45.1600-4/ad.jpg",
                    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
                },
            ),
        ),
        ({"kind": "text", "text": "Quiero clases de inglés"},),
        Reply(to(5), sees=("clases de inglés",)),
    ),
    Case(
        "text_from_a_username_user_without_wa_id",
        (
            body(
                value(
                    contacts=[
                        {
                            "profile": {"name": "Bea", "username": "bea.learns"},
                            "user_id": "BR.13491208655302741918",
                        }
                    ],
                    messages=[
                        {
                            "from_user_id": "BR.13491208655302741918",
                            "id": wamid(6),
                            "timestamp": "1764680400",
                            "type": "text",
                            "text": {"body": "Oi, tudo bem?"},
                        }
                    ],
                )
            ),
        ),
        ({"kind": "text", "user_id": "BR.13491208655302741918", "phone_e164": None},),
        Reply({"recipient": "BR.13491208655302741918"}, sees=("tudo bem",)),
    ),
    # --- buttons and lists ---------------------------------------------------------------
    Case(
        "interactive_button_reply",
        (
            one(
                7,
                "interactive",
                {"type": "button_reply", "button_reply": {"id": "lvl-b1", "title": "Intermedio"}},
                context={"from": "15550783881", "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJBQkMA"},
            ),
        ),
        ({"kind": "text", "text": "Intermedio"},),
        Reply(to(7), sees=("Intermedio",)),
    ),
    Case(
        "interactive_list_reply",
        (
            one(
                8,
                "interactive",
                {
                    "type": "list_reply",
                    "list_reply": {
                        "id": "topic-food",
                        "title": "Comida",
                        "description": "Hablar de recetas",
                    },
                },
            ),
        ),
        ({"kind": "text", "text": "Comida"},),
        Reply(to(8), sees=("Comida",)),
    ),
    Case(
        "template_quick_reply_button",
        (
            one(
                9,
                "button",
                {"payload": "RESUME_LESSON", "text": "Seguir practicando"},
                context={"from": "15550783881", "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJERUYA"},
            ),
        ),
        ({"kind": "text", "text": "Seguir practicando"},),
        Reply(to(9), sees=("Seguir practicando",)),
    ),
    Case(
        "flow_completion_is_not_a_turn",
        (
            one(
                10,
                "interactive",
                {
                    "type": "nfm_reply",
                    "nfm_reply": {
                        "response_json": '{"flow_token":"AQAAAAACS5Fp","rating":"4"}',
                        "body": "Sent",
                        "name": "flow",
                    },
                },
            ),
        ),
        (),
    ),
    Case(
        "interactive_without_content_is_unsupported",
        (
            body(
                value(
                    contacts=[contact(11)],
                    messages=[message(11, "interactive")],
                    errors=[
                        {
                            "code": 131000,
                            "title": "Something went wrong",
                            "message": "Something went wrong",
                            "error_data": {"details": "Unsupported webhook payload"},
                        }
                    ],
                )
            ),
        ),
        ({"kind": "unsupported", "unsupported_type": "unknown"},),
        Reply(to(11), phrase="unsupported"),
    ),
    # --- media ---------------------------------------------------------------------------
    Case(
        "image_with_caption",
        (
            one(
                12,
                "image",
                {
                    "caption": "Mi desayuno",
                    "mime_type": "image/jpeg",
                    "sha256": SHA,
                    "id": "1200000000000012",
                },
            ),
        ),
        (
            {
                "kind": "image",
                "media_id": "1200000000000012",
                "media_mime": "image/jpeg",
                "caption": "Mi desayuno",
            },
        ),
        Reply(to(12), sees=("Mi desayuno",), images=1),
        media={"1200000000000012": "photo"},
    ),
    Case(
        "image_with_a_media_url_in_the_webhook",
        (
            one(
                13,
                "image",
                {
                    "mime_type": "image/jpeg",
                    "sha256": SHA,
                    "id": "1200000000000013",
                    "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/"
                    "?mid=1200000000000013&source=webhook&ext=1764680700&hash=ARk2",
                },
            ),
        ),
        ({"kind": "image", "media_id": "1200000000000013", "caption": None},),
        Reply(to(13), sees=("without a caption",), images=1),
        media={"1200000000000013": "photo"},
    ),
    Case(
        "image_sent_as_a_document",
        (
            one(
                14,
                "document",
                {
                    "filename": "pizarra.png",
                    "mime_type": "image/png",
                    "sha256": SHA,
                    "id": "1200000000000014",
                    "caption": "La pizarra de hoy",
                },
            ),
        ),
        ({"kind": "image", "media_mime": "image/png", "caption": "La pizarra de hoy"},),
        Reply(to(14), sees=("pizarra",), images=1),
        media={"1200000000000014": "png"},
    ),
    unsupported(
        15,
        "document_pdf",
        "document",
        {
            "caption": "Mis deberes",
            "filename": "deberes.pdf",
            "mime_type": "application/pdf",
            "sha256": SHA,
            "id": "1200000000000015",
        },
        "document",
    ),
    Case(
        "voice_note",
        (
            one(
                16,
                "audio",
                {
                    "mime_type": "audio/ogg; codecs=opus",
                    "sha256": SHA,
                    "id": "1200000000000016",
                    "voice": True,
                },
            ),
        ),
        ({"kind": "voice", "media_id": "1200000000000016", "extra": {"voice": True}},),
        stack=False,
        note="voice end to end (You said, reply, voice note): tests/integration/test_voice_e2e.py",
    ),
    Case(
        "audio_file_forwarded",
        (
            one(
                17,
                "audio",
                {
                    "mime_type": "audio/mpeg",
                    "sha256": SHA,
                    "id": "1200000000000017",
                    "voice": False,
                },
                context={"forwarded": True},
            ),
        ),
        ({"kind": "voice", "media_mime": "audio/mpeg", "forwarded": True},),
        stack=False,
        note="voice end to end (You said, reply, voice note): tests/integration/test_voice_e2e.py",
    ),
    unsupported(
        18,
        "video_with_caption",
        "video",
        {"caption": "Mi gato", "mime_type": "video/mp4", "sha256": SHA, "id": "1200000000000018"},
        "video",
    ),
    unsupported(
        19,
        "sticker_static",
        "sticker",
        {"mime_type": "image/webp", "sha256": SHA, "id": "1200000000000019", "animated": False},
        "sticker",
    ),
    unsupported(
        20,
        "sticker_animated",
        "sticker",
        {"mime_type": "image/webp", "sha256": SHA, "id": "1200000000000020", "animated": True},
        "sticker",
    ),
    unsupported(
        21,
        "location_current",
        "location",
        {"latitude": -23.5614, "longitude": -46.6559},
        "location",
    ),
    unsupported(
        22,
        "location_chosen_and_forwarded",
        "location",
        {
            "latitude": 38.7223,
            "longitude": -9.1393,
            "name": "Praça do Comércio",
            "address": "Praça do Comércio, 1100-148 Lisboa",
            "url": "https://maps.google.com/?cid=2000000000000000000",
        },
        "location",
        context={"forwarded": True},
    ),
    Case(
        "contacts",
        (
            one(
                23,
                "contacts",
                [
                    {
                        "name": {"first_name": "Lucía", "formatted_name": "Lucía Gómez"},
                        "phones": [{"phone": "+34 600 000 000", "type": "CELL"}],
                    }
                ],
            ),
        ),
        ({"kind": "unsupported", "unsupported_type": "contacts"},),
        Reply(to(23), phrase="unsupported"),
    ),
    unsupported(
        24,
        "order",
        "order",
        {
            "catalog_id": "354160437058781",
            "text": "",
            "product_items": [
                {
                    "product_retailer_id": "CURSO-A1",
                    "quantity": 1,
                    "item_price": 30,
                    "currency": "EUR",
                }
            ],
        },
        "order",
    ),
    Case(
        "unsupported_message_type",
        (
            one(
                25,
                "unsupported",
                None,
                errors=[
                    {
                        "code": 131051,
                        "title": "Message type unknown",
                        "message": "Message type unknown",
                        "error_data": {"details": "Message type is currently not supported."},
                    }
                ],
            ),
        ),
        ({"kind": "unsupported", "unsupported_type": "unsupported"},),
        Reply(to(25), phrase="unsupported"),
    ),
    unsupported(
        26,
        "unsupported_poll",
        "unsupported",
        {"type": "poll"},
        "unsupported",
        errors=[{"code": 131051, "title": "Message type unknown"}],
    ),
    # --- reactions, edits, deletions: no reply -------------------------------------------
    Case(
        "reaction",
        (
            one(
                27,
                "reaction",
                {"message_id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJPVVQA", "emoji": "👍"},
            ),
        ),
        (
            {
                "kind": "reaction",
                "target_message_id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJPVVQA",
                "text": "👍",
            },
        ),
    ),
    Case(
        "reaction_removed_empty_emoji",
        (
            one(
                28,
                "reaction",
                {"message_id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJPVVQA", "emoji": ""},
            ),
        ),
        ({"kind": "reaction", "text": None},),
    ),
    Case(
        "reaction_removed_without_emoji",
        (one(29, "reaction", {"message_id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJPVVQA"}),),
        ({"kind": "reaction", "text": None},),
    ),
    Case(
        "revoke",
        (one(30, "revoke", {"original_message_id": wamid(30, 1)}, k=2),),
        ({"kind": "delete", "target_message_id": wamid(30, 1), "event_id": wamid(30, 2)},),
    ),
    Case(
        "edit_text",
        (
            one(
                31,
                "edit",
                {
                    "original_message_id": wamid(31, 1),
                    "message": {"type": "text", "text": {"body": "Yo fui a la escuela"}},
                },
                k=2,
            ),
        ),
        ({"kind": "edit", "target_message_id": wamid(31, 1), "text": "Yo fui a la escuela"},),
    ),
    Case(
        "edit_image_caption",
        (
            one(
                32,
                "edit",
                {
                    "original_message_id": wamid(32, 1),
                    "message": {
                        "context": {"id": "M0"},
                        "type": "image",
                        "image": {
                            "caption": "Mi cocina, no mi baño",
                            "mime_type": "image/jpeg",
                            "sha256": SHA,
                            "id": "1200000000000032",
                        },
                    },
                },
                k=2,
            ),
        ),
        ({"kind": "edit", "caption": "Mi cocina, no mi baño", "text": None},),
    ),
    # --- system notices: no reply ------------------------------------------------------
    Case(
        "user_changed_number",
        (
            body(
                value(
                    messages=[
                        {
                            "from": wa(33),
                            "id": wamid(33),
                            "timestamp": "1764680400",
                            "system": {
                                "body": "Ana changed from 5511955000033 to 5511955000099",
                                "wa_id": "5511955000099",
                                "type": "user_changed_number",
                            },
                            "type": "system",
                        }
                    ]
                )
            ),
        ),
        (
            {
                "kind": "identity",
                "user_id": wa(33),
                "new_user_id": "5511955000099",
                "phone_e164": "+5511955000099",
            },
        ),
    ),
    Case(
        "customer_identity_changed",
        (
            body(
                value(
                    contacts=[contact(34)],
                    messages=[
                        {
                            "from": wa(34),
                            "id": wamid(34),
                            "timestamp": "1764680400",
                            "identity": {
                                "acknowledged": True,
                                "created_timestamp": "1764680400",
                                "hash": "Sjvjlx8G6Z0=",
                            },
                            "system": {
                                "body": "User identity changed",
                                "type": "customer_identity_changed",
                            },
                            "type": "system",
                        }
                    ],
                )
            ),
        ),
        (),
    ),
    Case(
        "request_welcome",
        (one(35, "request_welcome"),),
        (),
    ),
    # --- statuses: no reply ----------------------------------------------------------------
    Case(
        "status_sent_with_pricing",
        (
            body(
                value(
                    contacts=[contact(36)],
                    statuses=[
                        {
                            "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJTRU5UAA==",
                            "status": "sent",
                            "timestamp": "1764680401",
                            "recipient_id": wa(36),
                            "conversation": {
                                "id": "7270432eae37498234f4444b35ffc5",
                                "expiration_timestamp": "1764766801",
                                "origin": {"type": "service"},
                            },
                            "pricing": {
                                "billable": False,
                                "pricing_model": "PMP",
                                "category": "service",
                            },
                        }
                    ],
                )
            ),
        ),
        ({"kind": "status", "status": "sent", "status_error": None, "user_id": wa(36)},),
    ),
    Case(
        "status_failed_with_error",
        (
            body(
                value(
                    statuses=[
                        {
                            "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJGQUlMAA==",
                            "status": "failed",
                            "timestamp": "1764680402",
                            "recipient_id": wa(37),
                            "errors": [
                                {
                                    "code": 131047,
                                    "title": "Re-engagement message",
                                    "message": "Re-engagement message",
                                    "error_data": {
                                        "details": "Message failed to send because more than 24 "
                                        "hours have passed since the customer last replied."
                                    },
                                    "href": "https://developers.facebook.com/docs/whatsapp/"
                                    "cloud-api/support/error-codes/",
                                }
                            ],
                        }
                    ]
                )
            ),
        ),
        ({"kind": "status", "status": "failed", "status_error": "131047: Re-engagement message"},),
    ),
    Case(
        "status_read_in_a_group",
        (
            body(
                value(
                    statuses=[
                        {
                            "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJSRUFEAA==",
                            "status": "read",
                            "timestamp": "1764680403",
                            "recipient_id": GROUP_ID,
                            "recipient_type": "group",
                            "recipient_participant_id": wa(38),
                        }
                    ]
                )
            ),
        ),
        ({"kind": "status", "status": "read"},),
    ),
    Case(
        "status_played",
        (
            body(
                value(
                    statuses=[
                        {
                            "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJQTEFZAA==",
                            "status": "played",
                            "timestamp": "1764680404",
                            "recipient_id": wa(39),
                        }
                    ]
                )
            ),
        ),
        ({"kind": "status", "status": "played"},),
    ),
    # --- several in one body -------------------------------------------------------------
    Case(
        "two_entries_two_learners",
        (
            {
                "object": "whatsapp_business_account",
                "entry": [
                    {
                        "id": WABA_ID,
                        "changes": [
                            {
                                "value": value(
                                    contacts=[contact(40, "Caio")],
                                    messages=[message(40, "text", {"body": "Bom dia, Caio aqui"})],
                                ),
                                "field": "messages",
                            }
                        ],
                    },
                    {
                        "id": WABA_ID,
                        "changes": [
                            {
                                "value": value(
                                    contacts=[contact(41, "Dora")],
                                    messages=[
                                        message(41, "text", {"body": "Boa tarde, Dora aqui"})
                                    ],
                                ),
                                "field": "messages",
                            }
                        ],
                    },
                ],
            },
        ),
        (
            {"kind": "text", "user_id": wa(40), "display_name": "Caio"},
            {"kind": "text", "user_id": wa(41), "display_name": "Dora"},
        ),
        Reply(to(40), sees=("Caio aqui",)),
    ),
    Case(
        "message_and_status_in_one_change",
        (
            body(
                value(
                    contacts=[contact(42)],
                    messages=[message(42, "text", {"body": "Otra pregunta más"})],
                    statuses=[
                        {
                            "id": "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBJERUwA",
                            "status": "delivered",
                            "timestamp": "1764680399",
                            "recipient_id": wa(42),
                        }
                    ],
                )
            ),
        ),
        ({"kind": "text", "text": "Otra pregunta más"}, {"kind": "status", "status": "delivered"}),
        Reply(to(42), sees=("Otra pregunta",)),
    ),
    Case(
        "redelivered_text",
        (one(43, "text", {"body": "Esto llega dos veces"}),),
        ({"kind": "text", "event_id": wamid(43)},),
        Reply(to(43), sees=("llega dos veces",)),
        deliveries=3,
    ),
    # --- other webhook fields: nothing for the buddy -------------------------------------
    Case(
        "account_update",
        (
            body(
                {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "SPAM"}},
                field="account_update",
            ),
        ),
        (),
    ),
    Case(
        "user_preferences",
        (
            body(
                value(
                    contacts=[contact(44)],
                    user_preferences=[
                        {
                            "wa_id": wa(44),
                            "detail": "User requested to stop marketing messages",
                            "category": "marketing_messages",
                            "value": "stop",
                            "timestamp": 1764680400,
                        }
                    ],
                ),
                field="user_preferences",
            ),
        ),
        (),
    ),
    Case(
        "message_echo_of_the_business_app",
        (
            body(
                value(
                    contacts=[contact(45)],
                    message_echoes=[
                        {
                            "from": "15550783881",
                            "to": wa(45),
                            "id": wamid(45),
                            "timestamp": "1764680400",
                            "type": "text",
                            "text": {"body": "Sent from the phone app"},
                        }
                    ],
                ),
                field="smb_message_echoes",
            ),
        ),
        (),
    ),
    Case(
        "template_status_update",
        (
            body(
                {
                    "event": "APPROVED",
                    "message_template_id": 1205412800000000,
                    "message_template_name": "lesson_reminder",
                    "message_template_language": "es",
                    "reason": "NONE",
                },
                field="message_template_status_update",
            ),
        ),
        (),
    ),
    # --- groups: the learner is the sender; only what is for the buddy -------------------
    Case(
        "group_chatter_is_ignored",
        (one(46, "text", {"body": "¿Alguien tiene los apuntes?"}, group_id=GROUP_ID),),
        (),
    ),
    Case(
        "group_command_for_the_buddy",
        (one(47, "text", {"body": "/help"}, group_id=GROUP_ID),),
        ({"kind": "text", "text": "/help", "user_id": wa(47), "chat_id": GROUP_ID},),
        Reply(
            {"to": GROUP_ID, "recipient_type": "group", "context": {"message_id": wamid(47)}},
            phrase="help",
        ),
    ),
    Case(
        "group_reply_to_someone_else_is_ignored",
        (
            one(
                48,
                "text",
                {"body": "Sí, yo también"},
                group_id=GROUP_ID,
                context={"from": wa(1), "id": "wamid.HBgNNTUxMTk1NTAwMDAwMRUCABIYFkNMQVNTAA=="},
            ),
        ),
        ({"kind": "text", "chat_id": GROUP_ID, "addressed": None},),
        note="kept by parse (it may be a reply to the buddy), dropped once the log says it is not",
    ),
]
