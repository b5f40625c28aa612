"""Split long replies into parts a platform accepts, cutting where a reader would pause.

Lengths are measured in UTF-16 code units: Telegram and LINE count that way, and it is never
less than the number of code points WhatsApp counts, so one measure is safe for all three.
Cuts prefer a paragraph break, then a line break, then a sentence end, then a space, and only
then a hard cut. The whitespace at a cut is dropped; every other character is kept, in order.
"""

from __future__ import annotations

import re

# Where a cut may go, best first. Each pattern matches the whitespace (or the empty string
# right after CJK punctuation) at which the text is cut.
_BOUNDARIES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraph
    re.compile(r"\n\s*"),  # line
    re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+"),  # sentence end followed by space
    re.compile(r"(?<=[。！？])"),  # CJK sentence end (no space follows)
    re.compile(r"(?<=[,;:、，；：])\s*"),  # clause
    re.compile(r"\s+"),  # any space
)
# A boundary this early in the window would make a very short part; try a weaker one first.
_MIN_FILL = 0.5


def utf16_len(text: str) -> int:
    """Length as Telegram and LINE count it (astral characters count twice)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _window_end(text: str, limit: int) -> int:
    """Index of the longest prefix of ``text`` that fits in ``limit`` UTF-16 units."""
    units = 0
    for index, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut(window: str, *, whole: bool) -> tuple[int, int]:
    """(end of this part, start of the rest) within ``window``.

    ``whole`` says the window is followed by more text, so a boundary may sit at its very end.
    """
    best_any: tuple[int, int] | None = None
    for pattern in _BOUNDARIES:
        found: tuple[int, int] | None = None
        for match in pattern.finditer(window):
            if match.start() > 0 or match.end() > 0:
                if match.start() == 0:
                    continue
                found = (match.start(), match.end())
        if found is None:
            continue
        if found[0] >= len(window) * _MIN_FILL:
            return found
        if best_any is None or found[0] > best_any[0]:
            best_any = found
    if best_any is not None:
        return best_any
    del whole
    return len(window), len(window)


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most ``limit`` UTF-16 units whose concatenation, with the whitespace at
    each cut restored, is ``text``. Blank text gives no parts."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    if not text.strip():
        return []
    if utf16_len(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while rest:
        if utf16_len(rest) <= limit:
            parts.append(rest)
            break
        end = _window_end(rest, limit)
        # Look one character past the window so a space right after it counts as a boundary.
        window = rest[: end + 1]
        part_end, rest_start = _cut(window, whole=True)
        part_end = min(part_end, end)
        if part_end == 0:  # only whitespace before the first boundary: skip it
            rest = rest[rest_start:] if rest_start else rest[end:]
            continue
        part = rest[:part_end]
        rest_start = max(rest_start, part_end)
        if part.strip():
            parts.append(part)
        rest = rest[rest_start:]
        stripped = rest.lstrip()
        rest = stripped if stripped else ""
    return [p for p in parts if p.strip()]


def chunk(items: list[str], size: int) -> list[list[str]]:
    """Consecutive groups of at most ``size`` items (LINE takes 5 messages per call)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
