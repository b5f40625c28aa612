"""The corpus (tests/corpus) through the whole service: each body signed and posted as its
platform would, stored, claimed, answered through the fake OpenAI and delivered to the fake
platform. A case with a reply must get exactly that reply, where it belongs (the learner, the
group, its topic, quoting the learner); a silent one must produce no send and no model call."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from languagebuddy.tutor.phrases import PHRASES, phrase, problem_phrase
from tests.corpus import Case, case_id
from tests.corpus import line as line_corpus
from tests.corpus import telegram as telegram_corpus
from tests.corpus import whatsapp as whatsapp_corpus
from tests.fakes.openai import has_image, last_user_text
from tests.traffic import Platform, Stack, running_stack, subset, wait_done


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("corpus")) as running:
        yield running


CASES = [
    (name, case)
    for name, cases in (
        ("whatsapp", whatsapp_corpus.CASES),
        ("telegram", telegram_corpus.CASES),
        ("line", line_corpus.CASES),
    )
    for case in cases
    if case.stack
]


@pytest.mark.parametrize(("platform", "case"), CASES, ids=[f"{p}-{case_id(c)}" for p, c in CASES])
def test_corpus_case_through_the_stack(stack: Stack, platform: str, case: Case) -> None:
    stack.ai.reset()
    driver = Platform(platform, stack)
    driver.host(case)
    keys = driver.dedupe_keys(case)
    mark = driver.mark()
    for body in case.bodies:
        raw, headers = driver.signed(body)
        for _ in range(case.deliveries):
            response = httpx.post(
                f"{stack.service.base_url}/webhooks/{platform}", content=raw, headers=headers
            )
            assert response.status_code == 200, response.text
    if keys:
        wait_done(stack.db, keys)
    sent = driver.sends_since(mark)
    chats = stack.ai.chat_bodies()

    if case.reply is None:
        assert sent == [] and chats == []
        return
    reply = case.reply
    mine = [s for s in sent if subset(s, reply.to)]
    assert len(mine) == 1, (reply.to, sent)
    text = mine[0]["_text"]
    if reply.phrase is not None:
        expected = (
            phrase(reply.phrase, reply.lang)
            if reply.phrase in PHRASES and not reply.phrase.startswith("image_")
            else problem_phrase(reply.phrase, reply.lang)
        )
        assert text == expected
        assert chats == []  # a fixed phrase: no model call
        return
    [request] = [c for c in chats if all(w in last_user_text(c) for w in reply.sees)]
    images = sum(
        1
        for message in request["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    )
    assert images == reply.images and has_image(request) == bool(reply.images)
    assert all(w in text for w in reply.sees if len(w) < 150)  # the fake quotes the learner


def test_external_content_is_fetched_from_its_url_without_the_line_token(stack: Stack) -> None:
    """After the corpus case: the content host saw the GET, and no Authorization header."""
    [case] = [c for c in line_corpus.CASES if c.name == "image_from_an_external_provider"]
    stack.ai.reset()
    driver = Platform("line", stack)
    driver.host(case)
    before = len(stack.host.fetched("original-6.jpg"))
    body = json.loads(json.dumps(case.bodies[0]).replace("01JDX006", "01JDY006"))
    body["events"][0]["replyToken"] = "fresh-token-for-the-external-check"
    raw, headers = driver.signed(body)
    assert httpx.post(f"{stack.service.base_url}/webhooks/line", content=raw, headers=headers)
    wait_done(stack.db, driver.dedupe_keys(Case("x", (body,), ())))
    fetched = stack.host.fetched("original-6.jpg")[before:]
    assert len(fetched) == 1
    assert "authorization" not in fetched[0].headers
    assert stack.line.access_token not in json.dumps(fetched[0].headers)
    assert stack.host.fetched("preview-6.jpg") == []  # the original, not the preview
