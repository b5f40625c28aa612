"""A corpus of webhook bodies as the platforms really send them, each with what it must parse to
and what the learner must get back (or silence).

The bodies follow the platforms' documentation and the shapes their official SDKs' test fixtures
use (pywa for the WhatsApp Cloud API, line-bot-sdk-python, python-telegram-bot); the text in them
is our own. One module per platform (``whatsapp``, ``telegram``, ``line``) exports ``CASES``.

``tests/unit/test_corpus_parse.py`` runs every body through the channel's ``parse``;
``tests/integration/test_corpus_stack.py`` sends them, signed, to the running service with the
fakes and checks each reply, or that nothing at all was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Stands for the fake content host's address (http://127.0.0.1:PORT) in LINE external URLs;
# the stack test puts the real one in before signing the body.
CONTENT_HOST = "http://content-host.invalid"


@dataclass(frozen=True)
class Reply:
    """What the learner gets back.

    ``to``: fields the platform's send request must carry (where the reply lands: the learner,
    the group, its topic, quoting which message). Either the model answers (the fake OpenAI's
    default answer quotes the learner, so ``sees`` are words the learner said, found in the model
    request and in the reply), with ``images`` photos in the request; or a fixed ``phrase`` of
    the tutor answers without the model.
    """

    to: dict[str, Any]
    sees: tuple[str, ...] = ()
    images: int = 0
    phrase: str | None = None
    lang: str = "en"


@dataclass(frozen=True)
class Case:
    """One delivery (or a few bodies that belong together: a photo set arrives as several).

    ``events``: per parsed event (all bodies, in order), the fields it must have (``kind`` by
    its value). ``media``: platform media ids (WhatsApp media id, Telegram file_id, LINE message
    id) whose bytes the platform's fake hosts, by kind of file (``photo``); ``external``: names
    on the third-party content host (LINE external content). ``deliveries``: how many times
    each body is delivered (a redelivery must not be answered twice).
    """

    name: str
    bodies: tuple[dict[str, Any], ...]
    events: tuple[dict[str, Any], ...]
    reply: Reply | None = None
    media: dict[str, str] = field(default_factory=dict)
    external: dict[str, str] = field(default_factory=dict)
    deliveries: int = 1
    stack: bool = True  # False: parse only (the note says why)
    note: str = ""

    def __post_init__(self) -> None:
        if not self.stack and not self.note:
            raise ValueError(f"{self.name}: say why it runs through parse only")


def case_id(case: Case) -> str:
    return case.name
