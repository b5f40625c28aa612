"""What a finished call leaves behind: its record, both sides' transcripts in the learner's
memory (so the chat afterwards knows what was said), its usage, and the recap for the
learner's messaging channel.

The recap is not sent from here: a synthetic ``call_recap`` event goes into the durable inbox
with a dedupe key of its own per call, and the ordinary message pipeline answers it through
its outbox on the learner's channel. So it is sent exactly once, with the pipeline's retries,
and the tutor that writes it never learns which platform it goes to.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker

from languagebuddy.calls.agent import CallOutcome
from languagebuddy.events import InboundEvent, Kind
from languagebuddy.inbox.queue import Inbox
from languagebuddy.logs import get_logger
from languagebuddy.store import calls as call_store
from languagebuddy.store import repos

log = get_logger(__name__)


def recap_event(call_id: int, channel: str, channel_user_id: str) -> InboundEvent:
    """The inbox event that makes the pipeline send a call's recap; one per call."""
    return InboundEvent(
        channel=channel,
        event_id=f"call-recap-{call_id}",
        user_id=channel_user_id,
        kind=Kind.CALL_RECAP,
        extra={"call_id": call_id},
    )


async def remember_call(
    sessions: async_sessionmaker,
    inbox: Inbox,
    *,
    call_id: int,
    learner_id: int,
    provider: str,
    model: str,
    outcome: CallOutcome,
    recap_channels: list[str],
) -> bool:
    """Store the call's outcome once; returns False when it had been stored already."""
    async with sessions.begin() as session:
        if not await call_store.mark_memory_saved(session, call_id):
            return False
        await call_store.end_call(
            session,
            call_id,
            end_reason=outcome.end_reason,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            audio_in_seconds=outcome.audio_in_seconds,
            audio_out_seconds=outcome.audio_out_seconds,
            usage=outcome.usage,
        )
        for entry in outcome.transcript:
            text = entry.text + (" …" if entry.interrupted else "")
            await repos.add_turn(
                session,
                learner_id=learner_id,
                direction="in" if entry.role == "learner" else "out",
                modality="call",
                channel=provider,
                text=text,
                transcript=text,
                created_at=entry.at,
            )
        if outcome.input_tokens or outcome.output_tokens:
            await repos.record_usage(
                session,
                learner_id,
                "realtime",
                model,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                audio_seconds=outcome.audio_in_seconds + outcome.audio_out_seconds,
            )
        identity = None
        if outcome.transcript:
            identity = await call_store.messaging_identity(session, learner_id, recap_channels)
    if identity is not None:
        queued = await inbox.put(recap_event(call_id, identity.channel, identity.channel_user_id))
        log.info("call.recap_queued", call=call_id, channel=identity.channel, new=queued)
    log.info(
        "call.remembered",
        call=call_id,
        learner=learner_id,
        turns=len(outcome.transcript),
        reason=outcome.end_reason,
    )
    return True
