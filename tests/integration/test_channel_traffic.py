"""What the learner expects from the traffic that is not a plain message, end to end through the
service and the fakes: reactions are feedback, deleted messages are forgotten (and never answered
if the buddy had not answered yet), edits count only before the answer, a new phone number keeps
the learner, group members are their own learners, photos sent together get one lesson, and
oversize or unsafe media is refused with the right reply without fetching it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from languagebuddy.tutor.phrases import problem_phrase
from tests.corpus import line as ln
from tests.corpus import telegram as tg
from tests.corpus import whatsapp as wa
from tests.fakes.openai import last_user_text
from tests.traffic import FILES, Platform, Stack, post, query, running_stack, wait_done


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("traffic")) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(stack: Stack) -> None:
    stack.ai.reset()


def send(stack: Stack, platform: str, body: dict[str, Any], times: int = 1) -> list[str]:
    keys = post(stack, platform, body, times)
    if keys:
        wait_done(stack.db, keys)
    return keys


def wait_for_model(stack: Stack, count: int = 1, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while len(stack.ai.chat_bodies()) < count:
        assert time.time() < deadline, "the model was never asked"
        time.sleep(0.02)


def prompt(request: dict[str, Any]) -> str:
    return json.dumps(request["messages"], ensure_ascii=False)


def wa_text(n: int, k: int, text: str) -> dict[str, Any]:
    return wa.one(n, "text", {"body": text}, k=k)


# --------------------------------------------------------------------------- reactions


def test_a_reaction_is_feedback_on_the_buddys_turn_not_a_turn(stack: Stack) -> None:
    n = 60
    send(stack, "whatsapp", wa_text(n, 1, "Yo tengo veinte años"))
    [reply] = [m for m in stack.wa.sent if m.get("to") == wa.wa(n)]
    sent_before, asked_before = len(stack.wa.sent), len(stack.ai.chat_bodies())

    send(stack, "whatsapp", wa.one(n, "reaction", {"message_id": reply["_id"], "emoji": "👍"}, k=2))
    assert len(stack.wa.sent) == sent_before and len(stack.ai.chat_bodies()) == asked_before
    [(reaction,)] = query(
        stack, "SELECT reaction FROM turns WHERE provider_message_id = ?", reply["_id"]
    )
    assert reaction == "👍"

    send(stack, "whatsapp", wa_text(n, 3, "¿Y tú cuántos tienes?"))
    assert "The learner reacted to this message with 👍" in prompt(stack.ai.chat_bodies()[-1])

    send(stack, "whatsapp", wa.one(n, "reaction", {"message_id": reply["_id"], "emoji": ""}, k=4))
    [(reaction,)] = query(
        stack, "SELECT reaction FROM turns WHERE provider_message_id = ?", reply["_id"]
    )
    assert reaction is None  # taken back


def test_a_telegram_reaction_finds_the_buddys_message_in_that_chat(stack: Stack) -> None:
    n = 61
    send(stack, "telegram", tg.update(n, text="Hoy aprendí «madrugar»"))
    [reply] = [m for m in stack.tg.sent if str(m.get("chat_id")) == str(tg.uid(n))]
    reaction = {
        "update_id": 810000000 + n + 500,
        "message_reaction": {
            "chat": tg.private(n),
            "message_id": reply["_id"],
            "user": tg.user(n),
            "date": tg.DATE,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "🔥"}],
        },
    }
    sent_before = len(stack.tg.sent)
    send(stack, "telegram", reaction)
    assert len(stack.tg.sent) == sent_before
    rows = query(stack, "SELECT reaction FROM turns WHERE direction = 'out' AND reaction = '🔥'")
    assert rows == [("🔥",)]


# --------------------------------------------------------------------------- deletions


@pytest.mark.parametrize("platform", ["whatsapp", "line"])
def test_a_deleted_message_is_forgotten(stack: Stack, platform: str) -> None:
    secret = "Mi número es 600 123 456"
    if platform == "whatsapp":
        n, said = 62, wa_text(62, 1, secret)
        message_id = wa.wamid(n, 1)
        delete = wa.one(n, "revoke", {"original_message_id": message_id}, k=2)
        later = wa_text(n, 3, "Otra cosa")
    else:
        n, message_id = 62, ln.mid(62, 1)
        said = ln.body(ln.event(n, k=1, message=ln.text(secret, n, 1)))
        delete = ln.body(
            ln.event(n, "unsend", k=2, reply_token=False, unsend={"messageId": message_id})
        )
        later = ln.body(ln.event(n, k=3, message=ln.text("Otra cosa", n, 3)))
    [key] = send(stack, platform, said)
    sent = Platform(platform, stack).mark()
    send(stack, platform, delete)
    assert Platform(platform, stack).sends_since(sent) == []  # no reply to a deletion

    [(text, redacted)] = query(
        stack,
        "SELECT text, redacted_at FROM turns WHERE provider_message_id = ? AND direction = 'in'",
        message_id,
    )
    assert text is None and redacted is not None
    [(payload,)] = query(stack, "SELECT payload FROM inbox WHERE dedupe_key = ?", key)
    assert secret not in payload and json.loads(payload)["text"] is None
    send(stack, platform, later)
    assert "600 123 456" not in prompt(stack.ai.chat_bodies()[-1])  # gone from memory too


def test_a_message_deleted_before_the_answer_is_never_answered(stack: Stack) -> None:
    n = 63
    stack.ai.slow(1.0, "Primera respuesta")  # the buddy is busy with the first message
    first = post(stack, "whatsapp", wa_text(n, 1, "Primero"))
    wait_for_model(stack)
    second = post(stack, "whatsapp", wa_text(n, 2, "Segundo, con un secreto"))
    revoke = post(
        stack, "whatsapp", wa.one(n, "revoke", {"original_message_id": wa.wamid(n, 2)}, k=3)
    )
    wait_done(stack.db, first + second + revoke)
    assert stack.wa.texts_to(wa.wa(n)) == ["Primera respuesta"]
    assert not any("secreto" in prompt(body) for body in stack.ai.chat_bodies())
    [(payload,)] = query(stack, "SELECT payload FROM inbox WHERE dedupe_key = ?", second[0])
    assert "secreto" not in payload
    assert query(stack, "SELECT count(*) FROM turns WHERE text LIKE '%secreto%'") == [(0,)]


def test_a_message_deleted_while_the_buddy_thinks_gets_no_answer(stack: Stack) -> None:
    n = 64
    stack.ai.slow(1.0, "Demasiado tarde")
    said = post(stack, "whatsapp", wa_text(n, 1, "Algo que voy a borrar"))
    wait_for_model(stack)
    revoke = post(
        stack, "whatsapp", wa.one(n, "revoke", {"original_message_id": wa.wamid(n, 1)}, k=2)
    )
    wait_done(stack.db, said + revoke)
    assert stack.wa.texts_to(wa.wa(n)) == []
    assert query(stack, "SELECT count(*) FROM turns WHERE text LIKE '%voy a borrar%'") == [(0,)]


# --------------------------------------------------------------------------- edits


def test_an_edit_counts_before_the_answer_and_is_ignored_after_it(stack: Stack) -> None:
    n = 65
    stack.ai.slow(1.0, "Vale")
    first = post(stack, "telegram", tg.update(n, text="Hola"))
    wait_for_model(stack)
    target = {
        "update_id": 810000000 + n + 1,
        "message": {**tg.update(n)["message"], "message_id": 900, "text": "Yo sabo nadar"},
    }
    edit = tg.update(n, "edited_message", text="Yo sé nadar", edit_date=tg.DATE + 20)
    edit["update_id"] += 2
    edit["edited_message"]["message_id"] = 900
    keys = first + post(stack, "telegram", target) + post(stack, "telegram", edit)
    wait_done(stack.db, keys)
    bodies = stack.ai.chat_bodies()
    assert len(bodies) == 2 and "Yo sé nadar" in last_user_text(bodies[1])
    assert "sabo" not in last_user_text(bodies[1])
    assert len(stack.tg.texts_to(tg.uid(n))) == 2  # the first message and the edited one

    late = tg.update(n, "edited_message", text="Yo sé nadar muy bien", edit_date=tg.DATE + 90)
    late["update_id"] += 3
    late["edited_message"]["message_id"] = 900
    send(stack, "telegram", late)
    assert len(stack.ai.chat_bodies()) == 2 and len(stack.tg.texts_to(tg.uid(n))) == 2


# --------------------------------------------------------------------------- a new number


def test_a_new_phone_number_keeps_the_learner_and_their_history(stack: Stack) -> None:
    old, new = wa.wa(66), "5511955000199"
    send(stack, "whatsapp", wa_text(66, 1, "Me llamo Rosa y vivo en Recife"))
    [(learner, phone)] = query(
        stack,
        "SELECT l.id, l.phone_e164 FROM learners l JOIN identities i ON i.learner_id = l.id "
        "WHERE i.channel = 'whatsapp' AND i.channel_user_id = ?",
        old,
    )
    assert phone == "+" + old
    notice = wa.body(
        wa.value(
            messages=[
                {
                    "from": old,
                    "id": wa.wamid(66, 2),
                    "timestamp": "1764680500",
                    "system": {
                        "body": f"Rosa changed from {old} to {new}",
                        "wa_id": new,
                        "type": "user_changed_number",
                    },
                    "type": "system",
                }
            ]
        )
    )
    send(stack, "whatsapp", notice)
    message = wa.body(
        wa.value(
            contacts=[{"profile": {"name": "Rosa"}, "wa_id": new}],
            messages=[
                {
                    "from": new,
                    "id": wa.wamid(66, 3),
                    "timestamp": "1764680600",
                    "type": "text",
                    "text": {"body": "¿Te acuerdas de mí?"},
                }
            ],
        )
    )
    send(stack, "whatsapp", message)
    assert "vivo en Recife" in prompt(stack.ai.chat_bodies()[-1])  # the history came along
    assert stack.wa.texts_to(new) and query(
        stack,
        "SELECT l.id, l.phone_e164 FROM learners l JOIN identities i ON i.learner_id = l.id "
        "WHERE i.channel = 'whatsapp' AND i.channel_user_id = ?",
        new,
    ) == [(learner, "+" + new)]
    assert query(stack, "SELECT count(*) FROM identities WHERE channel_user_id = ?", old) == [(0,)]


# --------------------------------------------------------------------------- groups


def test_group_members_are_their_own_learners(stack: Stack) -> None:
    group = {"id": -4712345699, "title": "Clase B1", "type": "group"}

    def mention(n: int, text: str, message_id: int) -> dict[str, Any]:
        said = f"@languagebuddy_test_bot {text}"
        update = tg.update(
            n,
            chat=group,
            message_id=message_id,
            text=said,
            entities=[{"offset": 0, "length": 23, "type": "mention"}],
        )
        return {**update, "update_id": 820000000 + message_id}

    send(stack, "telegram", mention(67, "soy Ana", 11))
    send(stack, "telegram", mention(68, "soy Bruno", 12))
    learners = query(
        stack,
        "SELECT channel_user_id FROM identities WHERE channel = 'telegram' "
        "AND channel_user_id IN (?, ?, ?)",
        str(tg.uid(67)),
        str(tg.uid(68)),
        str(group["id"]),
    )
    assert sorted(learners) == [(str(tg.uid(67)),), (str(tg.uid(68)),)]  # not the group
    replies = [m for m in stack.tg.sent if m.get("chat_id") == group["id"]]
    assert [m["reply_parameters"]["message_id"] for m in replies] == [11, 12]

    forget = tg.update(
        67,
        chat=group,
        message_id=13,
        text="/forget-me@languagebuddy_test_bot",
        entities=[{"offset": 0, "length": 33, "type": "bot_command"}],
    )
    forget["update_id"] = 820000013
    send(stack, "telegram", forget)
    remaining = query(
        stack,
        "SELECT channel_user_id FROM identities WHERE channel_user_id IN (?, ?)",
        str(tg.uid(67)),
        str(tg.uid(68)),
    )
    assert remaining == [(str(tg.uid(68)),)]  # one member's erasure erases only them


# --------------------------------------------------------------------------- photo sets


def _images(request: dict[str, Any]) -> int:
    content = request["messages"][-1]["content"]
    return sum(1 for part in content if part.get("type") == "image_url")


def _photo(n: int, k: int, media_id: str, caption: str | None = None) -> dict[str, Any]:
    content = {"mime_type": "image/jpeg", "sha256": wa.SHA, "id": media_id}
    if caption:
        content["caption"] = caption
    return wa.one(n, "image", content, k=k)


def test_a_burst_of_whatsapp_photos_is_one_lesson_capped_at_four(stack: Stack) -> None:
    n = 69
    data, mime = FILES["photo"]
    ids = [stack.wa.add_media(data, mime, media_id=f"69000000000000{k}") for k in range(5)]
    keys: list[str] = []
    for k, media_id in enumerate(ids):
        keys += post(stack, "whatsapp", _photo(n, k, media_id, "Mi casa" if k == 0 else None))
    wait_done(stack.db, keys)
    visions = [b for b in stack.ai.chat_bodies() if "image_url" in json.dumps(b)]
    counts = [_images(b) for b in visions]
    assert counts == [4, 1]  # four in one lesson (the cap), the fifth on its own
    assert len(stack.wa.texts_to(wa.wa(n))) == 2
    merged = query(
        stack,
        "SELECT count(*) FROM inbox WHERE dedupe_key IN (?, ?, ?) AND merged_into IS NOT NULL",
        *keys[1:4],
    )
    assert merged == [(3,)]


def test_a_photo_set_retried_after_a_model_failure_is_answered_once(stack: Stack) -> None:
    """The siblings are taken from the inbox with the reply: when the first attempt fails before
    the reply is stored, the retry answers the whole set, once."""
    n = 70
    data, mime = FILES["photo"]
    ids = [stack.wa.add_media(data, mime, media_id=f"70000000000000{k}") for k in range(2)]
    stack.ai.fail(500, times=1)  # the first attempt's vision request fails
    keys: list[str] = []
    for k, media_id in enumerate(ids):
        keys += post(stack, "whatsapp", _photo(n, k, media_id))
    wait_done(stack.db, keys)
    visions = [b for b in stack.ai.chat_bodies() if "image_url" in json.dumps(b)]
    assert [_images(b) for b in visions] == [2, 2]
    apology, lesson = stack.wa.texts_to(wa.wa(n))  # "sorry, I'm slow" once, then the lesson
    assert "2 photos together" in lesson and "foto" not in apology


# --------------------------------------------------------------------------- media limits


def test_an_oversize_whatsapp_image_is_refused_without_fetching_it(stack: Stack) -> None:
    n = 71
    data, _ = FILES["photo"]
    big = data + b"\0" * (6 * 1024 * 1024)  # over WhatsApp's 5 MB image limit
    media_id = stack.wa.add_media(big, "image/jpeg", media_id="7100000000000001")
    send(stack, "whatsapp", _photo(n, 1, media_id))
    assert stack.wa.texts_to(wa.wa(n)) == [problem_phrase("image_too_large", "en")]
    assert stack.wa.server.recorded(f"/{media_id}", method="GET")  # the size was looked up
    lookaside = stack.wa.server.recorded("/whatsapp_business/attachments/", method="GET")
    assert not [r for r in lookaside if f"mid={media_id}" in r.query]  # the bytes were not


def test_external_content_redirected_to_a_private_address_is_refused(stack: Stack) -> None:
    n = 72
    stack.host.add("redirecting.jpg", b"", redirect_to="http://169.254.169.254/latest/meta-data")
    message = {
        "id": ln.mid(n),
        "type": "image",
        "quoteToken": "q72",
        "contentProvider": {
            "type": "external",
            "originalContentUrl": f"{ln.CONTENT_HOST}/media/redirecting.jpg",
        },
    }
    body = ln.body(ln.event(n, message=message))
    send(stack, "line", body)
    assert stack.line.texts_to(ln.uid(n)) == [problem_phrase("image_download_failed", "en")]
    assert len(stack.host.fetched("redirecting.jpg")) == 1


def test_external_content_over_the_limit_is_refused(stack: Stack) -> None:
    n = 73
    data, _ = FILES["photo"]
    stack.host.add("huge.jpg", data + b"\0" * (21 * 1024 * 1024), declare_length=False)
    message = {
        "id": ln.mid(n),
        "type": "image",
        "quoteToken": "q73",
        "contentProvider": {
            "type": "external",
            "originalContentUrl": f"{ln.CONTENT_HOST}/media/huge.jpg",
        },
    }
    send(stack, "line", ln.body(ln.event(n, message=message)))
    assert stack.line.texts_to(ln.uid(n)) == [problem_phrase("image_too_large", "en")]
