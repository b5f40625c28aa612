"""Split long replies into parts a platform accepts, cutting where a reader would pause.

Lengths are measured in UTF-16 code units: Telegram and LINE count that way, and it is never
less than the number of code points WhatsApp counts, so one measure is safe for all three.
Cuts prefer a paragraph break, then a line break, then a sentence end, then a space, and only
then a hard cut. The whitespace at a cut is dropped; every other character is kept, in order.
"""

from __future__ import annotations

import re

# Where a cut may go, best first, each with the least fill of the window (share of the limit)
# it must reach: a paragraph break a third of the way in beats a sentence end near the limit.
# Each pattern matches the whitespace (or the empty string after CJK punctuation) dropped there.
_BOUNDARIES: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"\n[ \t]*\n\s*"), 0.3),  # paragraph
    (re.compile(r"\n\s*"), 0.4),  # line
    (re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+"), 0.5),  # sentence end + space
    (re.compile(r"(?<=[。！？])\s*"), 0.5),  # CJK sentence end (no space needed)
    (re.compile(r"(?<=[,;:、，；：])\s*"), 0.6),  # clause
    (re.compile(r"\s+"), 0.0),  # any space
)


def utf16_len(text: str) -> int:
    """Length as Telegram and LINE count it (astral characters count twice)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _fit(text: str, limit: int) -> int:
    """Index just past the longest prefix of ``text`` that fits in ``limit`` UTF-16 units."""
    units = 0
    for index, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut(text: str, fit: int) -> tuple[int, int]:
    """(end of this part, start of the rest): the best boundary with a part end in (0, fit].

    The search runs a little past ``fit`` so that a space right after the window counts.
    """
    window = text[: fit + 1]
    fallback: tuple[int, int] | None = None
    for pattern, min_fill in _BOUNDARIES:
        found: tuple[int, int] | None = None
        for match in pattern.finditer(window):
            if 0 < match.start() <= fit:
                found = (match.start(), match.end())
        if found is None:
            continue
        if found[0] >= fit * min_fill:
            return found
        if fallback is None or found[0] > fallback[0]:
            fallback = found
    return fallback or (fit, fit)


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most ``limit`` UTF-16 units; ``text`` is the parts joined by the whitespace
    dropped at each cut. Blank text gives no parts."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    if not text.strip():
        return []
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        part_end, rest_start = _cut(rest, _fit(rest, limit))
        # Whitespace matched by a boundary pattern may extend the cut; the rest starts after it
        # and after any further whitespace, so no part starts with a space.
        if rest[:part_end].strip():
            parts.append(rest[:part_end])
        rest = rest[rest_start:].lstrip()
    if rest.strip():
        parts.append(rest)
    return parts


def chunk(items: list[str], size: int) -> list[list[str]]:
    """Consecutive groups of at most ``size`` items (LINE takes 5 messages per call)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
