"""BERT's basic tokenization in pure Python: normalisation that keeps an alignment map, then word splitting.

This reproduces ``tokenizers``' ``BertNormalizer`` + ``BertPreTokenizer`` exactly, offsets included:

1. optional NFC (off for the Hub's DistilBERT tokenizers; see :class:`BertNormalizer`);
2. ``clean_text``: control and format characters removed, whitespace mapped to a space;
3. ``handle_chinese_chars``: spaces around CJK ideographs;
4. ``strip_accents``: NFD, then non-spacing marks removed;
5. ``lowercase``: per-character Unicode lowercase;
6. split on whitespace (dropped) and punctuation (kept as one-character words).

Every normalised character remembers the span of the original string it came from, so token offsets point into
the text the user passed. The character classes are measured from the ``tokenizers`` library
(``_unicode_tables.py``), not taken from ``unicodedata``, whose Unicode version differs between Pythons.

Three paths give identical results: ASCII text without control characters is only lower-cased (identity
alignment); other text is mapped character by character through a cached table; text where canonical reordering
or composition moves characters across each other (rare: surviving combining marks, NFC input) is run through a
step-by-step emulation of the library's alignment bookkeeping.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from distilbert_mf.tokenization import _unicode_tables as _tables

__all__ = ["BertNormalizer", "Normalized"]

_HANGUL_S, _HANGUL_L, _HANGUL_V, _HANGUL_T = 0xAC00, 0x1100, 0x1161, 0x11A7
_HANGUL_L_COUNT, _HANGUL_V_COUNT, _HANGUL_T_COUNT = 19, 21, 28
_HANGUL_N = _HANGUL_V_COUNT * _HANGUL_T_COUNT  # 588
_HANGUL_S_COUNT = _HANGUL_L_COUNT * _HANGUL_N  # 11172

# (normalised text, start of each normalised char in the original or None for identity, end of each or None)
Normalized = tuple[str, list[int] | None, list[int] | None]


class _RangeSet:
    """Membership in sorted inclusive code-point ranges (bisect)."""

    __slots__ = ("_ends", "_starts", "ranges")

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self.ranges = tuple(ranges)
        self._starts = [first for first, _ in self.ranges]
        self._ends = [last for _, last in self.ranges]

    def __contains__(self, cp: int) -> bool:
        i = bisect.bisect_right(self._starts, cp) - 1
        return i >= 0 and cp <= self._ends[i]

    def regex_class(self) -> str:
        """The body of a regex character class matching exactly these code points."""
        return "".join(f"\\U{first:08X}-\\U{last:08X}" for first, last in self.ranges)


def _points_to_ranges(points: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in sorted(set(points)):
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


class _Unicode:
    """The measured tables in the shapes the normaliser needs (built once, on first use)."""

    def __init__(self) -> None:
        self.control = _RangeSet(_tables.CONTROL)
        self.whitespace = _RangeSet(_tables.WHITESPACE)
        self.chinese = _RangeSet(_tables.CHINESE)
        self.punctuation = _RangeSet(_tables.PUNCTUATION)
        self.marks = _RangeSet(_tables.NONSPACING_MARKS)
        self.ccc = {chr(cp): value for cp, value in _tables.COMBINING_CLASS.items()}
        one_level = {entry[0]: entry[1:] for entry in _tables.DECOMPOSITION}

        def expand(cp: int) -> str:
            parts = one_level.get(cp)
            return chr(cp) if parts is None else "".join(expand(p) for p in parts)

        self.decomposition = {chr(cp): expand(cp) for cp in one_level}
        pair_to_char = {parts: cp for cp, parts in one_level.items() if len(parts) == 2}
        self.composition = {(chr(a), chr(b)): chr(pair_to_char[(a, b)]) for a, b in _tables.COMPOSITION_PAIRS}
        lower: dict[str, str] = {}
        for first, last, step, delta in _tables.LOWERCASE_RUNS:
            for cp in range(first, last + 1, step):
                lower[chr(cp)] = chr(cp + delta)
        lower.update({chr(cp): s for cp, s in _tables.LOWERCASE_SPECIAL.items()})
        self.lower = lower

        # characters after which per-character mapping is not exact (see module docstring)
        survivors = [cp for cp in _tables.COMBINING_CLASS if cp not in self.marks]
        survivor_chars = {chr(cp) for cp in survivors}
        survivors += [ord(c) for c, full in self.decomposition.items() if survivor_chars & set(full)]
        self.reorder_re = re.compile(f"[{_RangeSet(_points_to_ranges(survivors)).regex_class()}]")

        sensitive = set(_tables.COMBINING_CLASS)
        sensitive.update(b for _, b in _tables.COMPOSITION_PAIRS)
        sensitive.update(range(_HANGUL_V, _HANGUL_V + _HANGUL_V_COUNT))
        sensitive.update(range(_HANGUL_T + 1, _HANGUL_T + _HANGUL_T_COUNT))
        for c in self.decomposition:
            if compose(decompose([c], self), self) != [(c, 0)]:
                sensitive.add(ord(c))
        self.nfc_re = re.compile(f"[{_RangeSet(_points_to_ranges(sensitive)).regex_class()}]")

        space = self.whitespace.regex_class()
        punct = self.punctuation.regex_class()
        # a word is a run of anything but whitespace and punctuation; each punctuation char is its own word
        self.word_re = re.compile(f"[^{space}{punct}]+|[{punct}]")


@lru_cache(maxsize=1)
def unicode_data() -> _Unicode:
    """The shared tables (built on first use, in a few tens of milliseconds)."""
    return _Unicode()


def _full_decomposition(ch: str, data: _Unicode) -> str:
    cp = ord(ch)
    index = cp - _HANGUL_S
    if 0 <= index < _HANGUL_S_COUNT:
        lead = chr(_HANGUL_L + index // _HANGUL_N)
        vowel = chr(_HANGUL_V + (index % _HANGUL_N) // _HANGUL_T_COUNT)
        tail = index % _HANGUL_T_COUNT
        return lead + vowel + (chr(_HANGUL_T + tail) if tail else "")
    return data.decomposition.get(ch, ch)


def decompose(chars: Sequence[str], data: _Unicode) -> list[tuple[str, int]]:
    """Canonical decomposition with the library's change codes: ``(char, 0)`` replaces, ``(char, 1)`` inserts.

    Runs of non-starters are stably sorted by combining class, each char keeping its change code.
    """
    out: list[tuple[str, int]] = []
    for ch in chars:
        full = _full_decomposition(ch, data)
        out.append((full[0], 0))
        out.extend((c, 1) for c in full[1:])
    ccc = data.ccc
    i, n = 0, len(out)
    while i < n:
        if out[i][0] not in ccc:
            i += 1
            continue
        j = i
        while j < n and out[j][0] in ccc:
            j += 1
        if j - i > 1:
            out[i:j] = sorted(out[i:j], key=lambda item: ccc[item[0]])
        i = j
    return out


def _compose_pair(first: str, second: str, data: _Unicode) -> str | None:
    a, b = ord(first), ord(second)
    l_index, v_index = a - _HANGUL_L, b - _HANGUL_V
    if 0 <= l_index < _HANGUL_L_COUNT and 0 <= v_index < _HANGUL_V_COUNT:
        return chr(_HANGUL_S + (l_index * _HANGUL_V_COUNT + v_index) * _HANGUL_T_COUNT)
    s_index, t_index = a - _HANGUL_S, b - _HANGUL_T
    if 0 <= s_index < _HANGUL_S_COUNT and s_index % _HANGUL_T_COUNT == 0 and 0 < t_index < _HANGUL_T_COUNT:
        return chr(a + t_index)
    return data.composition.get((first, second))


def compose(seq: list[tuple[str, int]], data: _Unicode) -> list[tuple[str, int]]:
    """Canonical composition of a decomposed sequence; a composed char absorbs its partner's change code.

    ``(char, -n)`` means the char replaces one original char and removes the ``n`` that follow.
    """
    out: list[list] = []
    starter = -1  # index in out of the last starter
    last_ccc = -1  # ccc of the last char appended after that starter (-1: none yet)
    ccc = data.ccc
    for ch, change in seq:
        klass = ccc.get(ch, 0)
        if starter >= 0 and (last_ccc == -1 or 0 < last_ccc < klass):
            composite = _compose_pair(out[starter][0], ch, data)
            if composite is not None:
                out[starter][0] = composite
                out[starter][1] += change - 1
                continue
        out.append([ch, change])
        if klass == 0:
            starter, last_ccc = len(out) - 1, -1
        else:
            last_ccc = klass
    return [(ch, change) for ch, change in out]


def transform(align: list[tuple[int, int]], seq: list[tuple[str, int]]) -> tuple[list[str], list[tuple[int, int]]]:
    """Apply change codes to an alignment the way ``tokenizers``' ``NormalizedString.transform`` does.

    Alignment is positional: a replacing char takes the span of the next unread old char, an inserted char
    copies the span of the last old char read (``(0, 0)`` at the very start).
    """
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    idx = 0
    for ch, change in seq:
        if change > 0:
            span = align[idx - 1] if idx >= 1 else (0, 0)
        else:
            span = align[idx]
            idx += 1 - change
        chars.append(ch)
        spans.append(span)
    return chars, spans


_ASCII_SPACES = str.maketrans("\t\n\r", "   ")


class BertNormalizer:
    """``tokenizers``' BERT normalizer in Python, keeping where each normalised char came from.

    ``strip_accents=None`` follows ``lowercase`` (BERT's rule). ``nfc=True`` runs Unicode NFC first (as
    transformers' original Python tokenizer did); it only changes results for text that is not already NFC
    and when accents are kept.
    """

    def __init__(
        self,
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
        nfc: bool = False,
    ) -> None:
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.handle_chinese_chars = bool(handle_chinese_chars)
        self.nfc = bool(nfc)
        self._data = unicode_data()
        self._map = _CharMap(self)
        self._ascii_control_re = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
        self.word_re = self._data.word_re

    def map_char(self, ch: str) -> str:
        """What one char becomes (steps 2-5), alone."""
        data, cp = self._data, ord(ch)
        if cp in data.control:
            return ""
        if cp in data.whitespace:
            return " "
        out = ch
        if self.strip_accents:
            out = "".join(c for c, _ in decompose([ch], data) if ord(c) not in data.marks)
        if self.lowercase:
            lower = data.lower
            out = "".join(lower.get(c, c) for c in out)
        if self.handle_chinese_chars and cp in data.chinese:
            return f" {out} "
        return out

    def normalize(self, text: str) -> Normalized:
        """``(normalised, starts, ends)``: char ``i`` of the result came from ``text[starts[i]:ends[i]]``.

        ``starts is None`` means the identity alignment; ``ends is None`` means ``ends[i] = starts[i] + 1``.
        """
        if text.isascii() and not self._ascii_control_re.search(text):
            if "\t" in text or "\n" in text or "\r" in text:
                text = text.translate(_ASCII_SPACES)
            return (text.lower() if self.lowercase else text), None, None
        if (self.nfc and self._data.nfc_re.search(text)) or (self.strip_accents and self._data.reorder_re.search(text)):
            return self._normalize_stepwise(text)
        char_map = self._map
        outs = [char_map[c] for c in text]
        normalized = "".join(outs)
        if len(normalized) == len(text) and all(len(o) == 1 for o in outs):
            return normalized, None, None
        starts = [i for i, o in enumerate(outs) for _ in range(len(o))]
        return normalized, starts, None

    def _normalize_stepwise(self, text: str) -> Normalized:
        data = self._data
        chars: list[str] = list(text)
        spans = [(i, i + 1) for i in range(len(text))]
        if self.nfc:
            chars, spans = transform(spans, compose(decompose(chars, data), data))
        kept_chars: list[str] = []
        kept_spans: list[tuple[int, int]] = []
        for ch, span in zip(chars, spans):
            cp = ord(ch)
            if cp in data.control:
                continue
            if cp in data.whitespace:
                kept_chars.append(" ")
                kept_spans.append(span)
            elif self.handle_chinese_chars and cp in data.chinese:
                kept_chars += [" ", ch, " "]
                kept_spans += [span, span, span]
            else:
                kept_chars.append(ch)
                kept_spans.append(span)
        chars, spans = kept_chars, kept_spans
        if self.strip_accents:
            chars, spans = transform(spans, decompose(chars, data))
            pairs = [(c, s) for c, s in zip(chars, spans) if ord(c) not in data.marks]
            chars, spans = [c for c, _ in pairs], [s for _, s in pairs]
        if self.lowercase:
            lower = data.lower
            new_chars, new_spans = [], []
            for ch, span in zip(chars, spans):
                out = lower.get(ch, ch)
                new_chars.extend(out)
                new_spans.extend([span] * len(out))
            chars, spans = new_chars, new_spans
        return "".join(chars), [s for s, _ in spans], [e for _, e in spans]


class _CharMap(dict):
    """Per-char results of a normalizer, computed on first sight."""

    def __init__(self, normalizer: BertNormalizer) -> None:
        super().__init__()
        self._normalizer = normalizer

    def __missing__(self, ch: str) -> str:
        out = self._normalizer.map_char(ch)
        self[ch] = out
        return out
