"""What the learner does besides saying something new: events that get no reply.

- A reaction is feedback on the buddy's turn it points at: kept on that turn, where the tutor
  sees it in its memory ("the learner reacted with 👍" after a correction).
- A deletion removes the learner's words from the log and from the stored inbox payloads (and
  the buddy's answer to them, which quotes or corrects them); a message deleted before the
  buddy answered it is not answered at all.
- An edit is not a new turn: its content replaces the original only while the buddy has not
  answered yet (``pending_changes``, when the original is picked up); later, it is ignored.
- A new identity (a new phone number) moves the learner, so history and level are kept.
- In a group, a turn is for the buddy only when it says so: a command for it, a mention of it,
  a reply to one of its messages. Anything else is ignored without a word.

Channel-neutral: the channels turn their platform's shapes into these events, and whatever
only a platform can tell is asked of the channel (``Channel.addressed``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import async_sessionmaker

from languagebuddy.channels.base import Channel
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import Claimed, Inbox, Queued
from languagebuddy.logs import get_logger, redact_id
from languagebuddy.store import repos

log = get_logger(__name__)

MAX_REACTION_CHARS = 32


class SideEvents:
    """Handles the events that are not turns (the worker's handler for them)."""

    def __init__(self, sessions: async_sessionmaker, inbox: Inbox) -> None:
        self.sessions = sessions
        self.inbox = inbox

    async def handle(self, item: Claimed) -> None:
        event = item.event
        if event.kind is Kind.REACTION:
            await self._react(event)
        elif event.kind is Kind.DELETE:
            await self._delete(event)
        elif event.kind is Kind.EDIT:
            # Still unanswered, it was folded into its message when that was picked up (and
            # taken out of the inbox); here the buddy has answered already.
            log.info("edit after the answer ignored", channel=event.channel)
        elif event.kind is Kind.IDENTITY:
            await self._move(event)

    async def _react(self, event: InboundEvent) -> None:
        chat = event.chat_id or event.user_id
        async with self.sessions.begin() as session:
            turn = await repos.buddy_turn(
                session, event.channel, chat, event.target_message_id or ""
            )
            learner = await repos.find_learner(session, event.channel, event.user_id)
            if turn is None or learner is None or turn.learner_id != learner.id:
                # On the learner's own message, on someone else's lesson, or on a message we
                # no longer know: nothing to learn from it.
                log.info("reaction not on the learner's lesson", channel=event.channel)
                return
            turn.reaction = (event.text or "")[:MAX_REACTION_CHARS] or None
            turn.reaction_at = time.time()
        log.info("reaction kept", channel=event.channel, turn=turn.id, removed=not event.text)

    async def _delete(self, event: InboundEvent) -> None:
        target = event.target_message_id or ""
        async with self.sessions.begin() as session:
            answered = await self.inbox.redact(session, event.channel, target)
            learner = await repos.find_learner(session, event.channel, event.user_id)
            turns = await repos.learner_turns_for(session, event.channel, target, answered)
            mine = [t for t in turns if learner is not None and t.learner_id == learner.id]
            # The buddy's answer quotes or corrects what was deleted: it goes from memory too
            # (the learner keeps seeing it in their chat; only our copy is forgotten).
            items = sorted({t.inbox_item_id for t in mine if t.inbox_item_id is not None})
            answers = await repos.answers_to(session, items)
            for turn in [*mine, *answers]:
                repos.redact_turn(turn)
            await repos.blank_outbox(session, items)
            forgotten = len(mine) + len(answers)
        log.info("message deleted", channel=event.channel, payloads=len(answered), turns=forgotten)

    async def _move(self, event: InboundEvent) -> None:
        async with self.sessions.begin() as session:
            learner = await repos.move_identity(
                session,
                event.channel,
                event.user_id,
                event.new_user_id,
                phone_e164=event.phone_e164,
            )
        log.info(
            "identity moved",
            channel=event.channel,
            learner=learner.id if learner else None,
            to=redact_id(event.new_user_id or ""),
        )


# --- before a turn is answered --------------------------------------------------------------


@dataclass
class Context:
    """What the log says about a turn: is it for the buddy, and which of the buddy's
    messages does it answer (its text, for the tutor)."""

    for_the_buddy: bool
    replying_to: str | None = None


async def context(event: InboundEvent, channel: Channel, sessions: async_sessionmaker) -> Context:
    replying_to = None
    if event.reply_to_message_id:
        async with sessions() as session:
            turn = await repos.buddy_turn(
                session, event.channel, event.chat_id or event.user_id, event.reply_to_message_id
            )
        replying_to = turn.text if turn is not None else None
    if not event.chat_id or event.addressed:
        return Context(True, replying_to)
    verdict = await channel.addressed(event)
    if verdict is None:
        verdict = replying_to is not None or _is_command(event)
    return Context(verdict, replying_to)


def _is_command(event: InboundEvent) -> bool:
    """One of the buddy's own commands (a group may hold other bots with theirs)."""
    from languagebuddy.tutor.commands import COMMANDS, parse_command

    command = parse_command(event.text) if event.kind is Kind.TEXT else None
    return command is not None and command.name in COMMANDS


@dataclass
class Changes:
    """Edits and deletions of a turn's message that arrived before the buddy answered it."""

    edits: list[Queued] = field(default_factory=list)
    deletions: list[Queued] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [q.id for q in (*self.edits, *self.deletions)]

    def apply(self, event: InboundEvent) -> InboundEvent:
        """The event with its latest edit (edits may arrive out of order: the platform's time
        decides, then arrival)."""
        if not self.edits:
            return event
        latest = max(self.edits, key=lambda q: (q.event.sent_at or 0.0, q.id)).event
        if event.kind is Kind.IMAGE:
            return event.model_copy(update={"caption": latest.caption or latest.text})
        return event.model_copy(update={"text": latest.text or latest.caption or ""})


async def pending_changes(inbox: Inbox, item: Claimed) -> Changes:
    """The edits and deletions of the item's message waiting behind it (only a message the
    learner can edit or delete has any: a call recap has no message id)."""
    if not item.event.message_id:
        return Changes()
    return changes_in(item.event, await inbox.following(item, limit=50))


def changes_in(event: InboundEvent, following: Sequence[Queued]) -> Changes:
    changes = Changes()
    if not event.message_id:
        return changes
    for queued in following:
        other = queued.event
        if other.target_message_id != event.message_id or other.chat_id != event.chat_id:
            continue
        if other.kind is Kind.EDIT:
            changes.edits.append(queued)
        elif other.kind is Kind.DELETE:
            changes.deletions.append(queued)
    return changes
