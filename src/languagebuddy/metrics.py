"""Prometheus metrics, one registry for the process. Names are stable: dashboards use them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

WEBHOOKS = Counter(
    "lb_webhooks_total",
    "Webhook requests by channel and outcome (accepted, duplicate, rejected, invalid)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
EVENTS_PROCESSED = Counter(
    "lb_events_processed_total",
    "Inbox events finished, by channel, kind and result (done, retry, dead)",
    ["channel", "kind", "result"],
    registry=REGISTRY,
)
INBOX_DEPTH = Gauge("lb_inbox_depth", "Inbox items by status", ["status"], registry=REGISTRY)
STAGE_SECONDS = Histogram(
    "lb_stage_seconds",
    "Latency of each pipeline stage (learner, media, tutor, send, total; voice notes: download, "
    "decode, transcribe, encode, upload)",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
MODEL_CALLS = Counter(
    "lb_model_calls_total",
    "Calls to the model provider by kind (chat, vision, stt, tts) and outcome",
    ["kind", "outcome"],
    registry=REGISTRY,
)
PLATFORM_CALLS = Counter(
    "lb_platform_calls_total",
    "Outbound platform API calls by channel, method and outcome",
    ["channel", "method", "outcome"],
    registry=REGISTRY,
)
VOICE_MILESTONE_SECONDS = Histogram(
    "lb_voice_milestone_seconds",
    "Voice replies: seconds from the learner's message arriving to each milestone (started, "
    "heard_sent, first_token, tutor_done, first_audio, synthesis_done, voice_sent)",
    ["milestone"],
    buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 30, 60),
    registry=REGISTRY,
)
CALLS = Counter(
    "lb_calls_total",
    "Phone calls finished, by provider and end reason (caller_hung_up, end_call, max_length…)",
    ["provider", "reason"],
    registry=REGISTRY,
)
CALLS_LIVE = Gauge("lb_calls_live", "Phone calls bridged by this process now", registry=REGISTRY)
