"""Phone calls, provider-neutral: a call rings (record it, find or onboard the caller, issue
its stream token), its media socket connects (redeem the token once), it runs (the agent and
bridge over the provider's serializer) and it ends (record, memory, recap).

Providers plug in with their call control (``CallControl``: hang-up, say) and, at the media
socket, their serializer (a ``Carrier`` and a ``CallerStream``); everything else is here and
in ``agent.py`` / ``bridge.py``, shared by Telnyx and Vonage alike.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from openai import AsyncOpenAI
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from languagebuddy.ai.realtime import AudioFormat
from languagebuddy.calls import tokens
from languagebuddy.calls.agent import (
    CallAgent,
    CallControl,
    CallerStream,
    CallOutcome,
    LiveCall,
    TutorForCalls,
)
from languagebuddy.calls.bridge import Carrier
from languagebuddy.calls.memory import remember_call
from languagebuddy.config import Settings
from languagebuddy.inbox.queue import Inbox
from languagebuddy.logs import get_logger, redact_id, redact_phone
from languagebuddy.metrics import CALLS, CALLS_LIVE
from languagebuddy.store import calls as call_store
from languagebuddy.store import repos
from languagebuddy.store.models import Learner
from languagebuddy.tutor.phrases import phrase

log = get_logger(__name__)


@dataclass(frozen=True)
class Ringing:
    """A call to answer: its record, its learner and the stream URL to give the provider."""

    call_id: int
    learner_id: int
    stream_url: str
    new_learner: bool


@dataclass(frozen=True)
class Redeemed:
    """A media socket's token, checked and used: the call it belongs to."""

    call: LiveCall
    provider: str


class CallService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker,
        inbox: Inbox,
        openai: AsyncOpenAI,
        tutor: TutorForCalls,
        signing_key: str,
        recap_channels: list[str],
        controls: dict[str, CallControl],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.inbox = inbox
        self.openai = openai
        self.tutor = tutor
        self.signing_key = signing_key
        self.recap_channels = recap_channels
        self.controls = controls
        self.live: dict[int, asyncio.Task[CallOutcome | None]] = {}

    # -- control plane (webhooks) -----------------------------------------------------------

    async def ring(
        self,
        provider: str,
        provider_call_id: str,
        *,
        from_e164: str | None,
        to_e164: str | None,
        provider_session_id: str | None = None,
        region_url: str | None = None,
    ) -> Ringing | None:
        """Record an incoming call and prepare its answer; None when this call was answered
        already (a redelivered webhook) or has ended. ``region_url`` travels in the token to
        the instance that will serve the call's socket (and send its commands)."""
        async with self.sessions.begin() as session:
            call, _created = await call_store.open_call(
                session,
                provider,
                provider_call_id,
                from_e164=from_e164,
                to_e164=to_e164,
                provider_session_id=provider_session_id,
            )
            if call.status != "ringing" or call.stream_claimed_at is not None:
                return None
            new_learner = False
            if call.learner_id is None:
                learner, new_learner = await self._caller(session, from_e164)
                call.learner_id = learner.id
            # One nonce per call: a redelivered webhook re-answers with the same token
            # content (Telnyx dedupes the command by its command_id anyway).
            if call.stream_nonce is None:
                call.stream_nonce = tokens.new_nonce()
            call_id, learner_id, nonce = call.id, call.learner_id, call.stream_nonce
        token = tokens.issue(
            self.signing_key,
            call_id=call_id,
            learner_id=learner_id,
            provider=provider,
            nonce=nonce,
            ttl_seconds=self.settings.call_token_ttl_seconds,
            region_url=region_url,
        )
        log.info(
            "call.ringing",
            provider=provider,
            call=call_id,
            learner=learner_id,
            new_learner=new_learner,
            caller=redact_phone(from_e164),
        )
        return Ringing(call_id, learner_id, self.stream_url(provider, token), new_learner)

    async def _caller(self, session, from_e164: str | None) -> tuple[Learner, bool]:  # type: ignore[no-untyped-def]
        """The learner behind the caller's number (the same as on WhatsApp when it matches),
        or a new learner onboarded by voice."""
        if from_e164:
            learner = await repos.find_learner_by_phone(session, from_e164)
            if learner is not None:
                return learner, False
        learner = Learner(phone_e164=from_e164)
        try:
            async with session.begin_nested():
                session.add(learner)
                await session.flush()
        except IntegrityError:  # the same number rang twice at once: use the other's learner
            existing = await repos.find_learner_by_phone(session, from_e164 or "")
            if existing is None:
                raise
            return existing, False
        return learner, True

    def stream_url(self, provider: str, token: str) -> str:
        """``wss://<PUBLIC_BASE_URL host>/calls/<provider>/media-stream?token=…``"""
        base = urlsplit(self.settings.public_base_url)
        scheme = "ws" if base.scheme == "http" else "wss"
        path = base.path.rstrip("/") + f"/calls/{provider}/media-stream"
        return f"{scheme}://{base.netloc}{path}?{urlencode({'token': token})}"

    async def answered(self, provider: str, provider_call_id: str, at: float) -> None:
        async with self.sessions.begin() as session:
            call = await call_store.find_call(session, provider, provider_call_id)
            if call is not None and call.answered_at is None:
                call.answered_at = at

    async def hung_up(
        self,
        provider: str,
        provider_call_id: str,
        *,
        cause: str | None,
        source: str | None,
        duration_s: float | None = None,
    ) -> None:
        """The provider says the call is over: record it, and stop its stream if it runs
        here (normally the provider closes the socket itself). ``duration_s``: the length the
        provider bills, when it says, which then replaces our own reckoning."""
        async with self.sessions.begin() as session:
            call = await call_store.find_call(session, provider, provider_call_id)
            if call is None:
                return
            await call_store.end_call(
                session, call.id, hangup_cause=cause, hangup_source=source, duration_s=duration_s
            )
            call_id = call.id
        task = self.live.get(call_id)
        if task is not None:
            # Give the socket's own close a moment; then end the call here.
            asyncio.get_running_loop().call_later(1.0, task.cancel)
        log.info("call.hung_up", provider=provider, call=call_id, cause=cause, source=source)

    async def apology(self, provider: str, provider_call_id: str) -> tuple[str, str]:
        """What the carrier says in its own voice when our side cannot take the call (the
        media socket never connected), in the caller's language: (text, language)."""
        learner_id = None
        async with self.sessions() as session:
            call = await call_store.find_call(session, provider, provider_call_id)
            if call is not None:
                learner_id = call.learner_id
        language = "en"
        if learner_id is not None:
            language = (await self.tutor.call_brief(learner_id)).phrase_language
        return phrase("call_apology", language), language

    # -- media plane (the stream socket) ----------------------------------------------------

    async def redeem(self, provider: str, token: str | None) -> Redeemed:
        """Check the token and use it up; TokenRefused unless it is valid and unused."""
        claims = tokens.verify(self.signing_key, token, provider=provider)
        async with self.sessions.begin() as session:
            if not await call_store.claim_stream(session, claims.call_id, claims.nonce):
                raise tokens.TokenRefused("token already used or call ended")
            call = await call_store.get_call(session, claims.call_id)
            assert call is not None
            if call.learner_id != claims.learner_id:
                raise tokens.TokenRefused("token does not match the call")
            live = LiveCall(
                call.id, claims.learner_id, call.provider_call_id, region_url=claims.region_url
            )
        return Redeemed(live, provider)

    async def run(
        self,
        redeemed: Redeemed,
        *,
        carrier: Carrier,
        stream: CallerStream,
        audio_format: AudioFormat,
    ) -> CallOutcome | None:
        """Run a connected call to its end and store what it leaves behind."""
        call = redeemed.call
        task = asyncio.current_task()
        assert task is not None
        self.live[call.call_id] = task  # type: ignore[assignment]
        CALLS_LIVE.set(len(self.live))
        outcome: CallOutcome | None = None
        agent: CallAgent | None = None
        try:
            brief = await self.tutor.call_brief(call.learner_id)
            agent = CallAgent(
                call=call,
                brief=brief,
                settings=self.settings,
                openai=self.openai,
                tutor=self.tutor,
                control=self.controls[redeemed.provider],
                carrier=carrier,
                audio_format=audio_format,
            )
            log.info("call.live", provider=redeemed.provider, call=call.call_id)
            try:
                outcome = await agent.run(stream)
            except asyncio.CancelledError:
                outcome = agent.outcome()
                raise
            return outcome
        finally:
            self.live.pop(call.call_id, None)
            CALLS_LIVE.set(len(self.live))
            if outcome is not None:
                CALLS.labels(redeemed.provider, outcome.end_reason).inc()
                await asyncio.shield(self._finish(redeemed, outcome))

    async def _finish(self, redeemed: Redeemed, outcome: CallOutcome) -> None:
        try:
            await remember_call(
                self.sessions,
                self.inbox,
                call_id=redeemed.call.call_id,
                learner_id=redeemed.call.learner_id,
                provider=redeemed.provider,
                model=self.settings.realtime_model,
                outcome=outcome,
                recap_channels=self.recap_channels,
            )
        except Exception:
            log.exception("call.remember_failed", call=redeemed.call.call_id)
        log.info(
            "call.finished",
            call=redeemed.call.call_id,
            provider_call=redact_id(redeemed.call.provider_call_id),
            reason=outcome.end_reason,
        )

    async def aclose(self) -> None:
        """Shutting down: end the calls running here (each stores what it has)."""
        tasks = list(self.live.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for control in self.controls.values():
            closer = getattr(control, "aclose", None)
            if closer is not None:
                await closer()
