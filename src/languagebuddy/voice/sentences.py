"""Cutting a reply into sentences while it streams, and making text fit to be spoken.

A sentence goes to speech synthesis the moment it is complete, so the cut must be decided from
what has arrived so far: a full stop counts only once the next character shows it was not a
decimal point or an ellipsis in the making. Very short openers ("¡Hola!") ride with the next
sentence, and a run-on with no punctuation is cut at a comma or space before it gets long.
"""

from __future__ import annotations

import re
import unicodedata

_ENDS = frozenset(".!?…")
_WIDE_ENDS = frozenset("。！？")  # CJK: no space follows
_CLOSERS = frozenset("\"')]}»”’」』）】")
MIN_CHARS = 12
MAX_CHARS = 600


class SentenceSplitter:
    """Feed text pieces; get back the sentences they completed, in order. The pieces returned
    plus :meth:`flush` are exactly the text fed (nothing added or dropped)."""

    def __init__(self, *, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> None:
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._buffer = ""

    @property
    def pending(self) -> str:
        return self._buffer

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        done: list[str] = []
        while (cut := self._cut(self._buffer)) is not None:
            done.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
        return done

    def flush(self) -> str:
        rest, self._buffer = self._buffer, ""
        return rest

    def split(self, text: str) -> list[str]:
        """A whole text at once."""
        pieces = self.feed(text)
        rest = self.flush()
        return [*pieces, rest] if rest.strip() else pieces

    def _cut(self, text: str) -> int | None:
        length = len(text)
        i = 0
        while i < length:
            char = text[i]
            if char == "\n" and len(text[:i].strip()) >= self.min_chars:
                return i + 1
            if char in _ENDS or char in _WIDE_ENDS:
                end = i + 1
                while end < length and (text[end] in _CLOSERS or text[end] in _ENDS):
                    end += 1
                if end >= length:
                    return None  # wait: the next character decides
                if (char in _WIDE_ENDS or text[end].isspace()) and len(
                    text[:end].strip()
                ) >= self.min_chars:
                    return end
                i = end
                continue
            i += 1
        if length > self.max_chars:
            window = text[: self.max_chars]
            for mark in (", ", "; ", ": ", " "):
                at = window.rfind(mark)
                if at > self.min_chars:
                    return at + len(mark)
            return self.max_chars
        return None


_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_MARKUP = re.compile(r"(\*\*|__|\*|`+|~~|^#+\s*|^\s*[-•]\s+)", re.MULTILINE)
_SPACES = re.compile(r"\s+")


def speakable(text: str) -> str:
    """The text as it should be read aloud: no markdown symbols, no emoji, one line."""
    text = _LINK.sub(r"\1", text)
    text = _MARKUP.sub("", text)
    kept = []
    for char in text:
        if char in "\u200d\ufe0f\ufe0e" or 0x1F3FB <= ord(char) <= 0x1F3FF:
            continue  # joiners, presentation selectors, skin tones
        category = unicodedata.category(char)
        if category == "So" or category == "Cs":
            kept.append(" ")
            continue
        kept.append(char)
    return _SPACES.sub(" ", "".join(kept)).strip()


def same_text(a: str, b: str) -> bool:
    """Equal once whitespace runs are ignored (what streamed vs. what was stored)."""
    return _SPACES.sub(" ", a).strip() == _SPACES.sub(" ", b).strip()
