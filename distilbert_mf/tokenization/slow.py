"""``DistilBertTokenizer``: BERT's WordPiece tokenizer in pure Python (standard library + numpy).

Same outputs as :class:`~distilbert_mf.tokenization.DistilBertTokenizerFast` (ids, offsets, masks, word and
sequence ids, overflow windows), offsets into the original text included, which transformers only offered in its
fast tokenizer. Pipeline per input, as ``tokenizers`` runs it: split off the added tokens matched in the raw text
(special tokens) -> normalise each remaining segment with an alignment map (:mod:`.basic`) -> split off the added
tokens matched in the normalised text (``add_tokens`` words) -> split words -> WordPiece (:mod:`.wordpiece`, cached
per word) -> truncate -> ``[CLS] A [SEP] (B [SEP])`` -> pad (:mod:`.encoding`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from distilbert_mf.tokenization.added_tokens import AddedToken
from distilbert_mf.tokenization.base import DistilBertTokenizerBase
from distilbert_mf.tokenization.basic import BertNormalizer
from distilbert_mf.tokenization.encoding import Encoding, pad_encodings, post_process, truncate_pair
from distilbert_mf.tokenization.strategies import EncodeOptions
from distilbert_mf.tokenization.wordpiece import WordPiece

__all__ = ["DistilBertTokenizer"]


class DistilBertTokenizer(DistilBertTokenizerBase):
    """DistilBERT's tokenizer in pure Python; see :class:`~.base.DistilBertTokenizerBase` for the arguments.

    Example::

        tok = DistilBertTokenizer("vocab.txt")
        tok("Hello world!", return_offsets_mapping=True)
        # {'input_ids': [101, 7592, 2088, 999, 102], 'attention_mask': [1, 1, 1, 1, 1],
        #  'offset_mapping': [(0, 0), (0, 5), (6, 11), (11, 12), (0, 0)]}
    """

    is_fast = False

    def _setup_backend(self) -> None:
        unsupported = self._added.unsupported()
        if unsupported:
            raise ValueError(self._unsupported_message(unsupported))
        self._normalizer = BertNormalizer(
            lowercase=self.do_lower_case,
            strip_accents=self.strip_accents,
            handle_chinese_chars=self.tokenize_chinese_chars,
            nfc=self.nfc,
        )
        self._word_re = self._normalizer.word_re
        self._wordpiece = WordPiece(
            self.vocab, unk_token=self._wordpiece_unk, max_input_chars_per_word=self.max_input_chars_per_word
        )
        self._added_tokens_changed(())
        self._template_changed()

    @staticmethod
    def _unsupported_message(contents: Sequence[str]) -> str:
        return (
            f"added tokens {list(contents)} use lstrip/rstrip/single_word options that the pure-Python tokenizer "
            "does not implement; use DistilBertTokenizerFast for them"
        )

    def _normalize_str(self, text: str) -> str:
        return self._normalizer.normalize(text)[0]

    def _check_addable(self, tokens: Sequence[AddedToken]) -> None:
        unsupported = [token.content for token in tokens if not token.plain]
        if unsupported:
            raise ValueError(self._unsupported_message(unsupported))
        super()._check_addable(tokens)

    def _added_tokens_changed(self, tokens: Sequence[AddedToken]) -> None:
        # leftmost, then longest, match of any added token (as tokenizers' Aho-Corasick), in the raw text and in
        # the normalised text; the first token listed wins where two normalise alike
        self._raw_ids = self._added.patterns(normalized=False)
        self._normalized_ids: dict[str, int] = {}
        for content, index in self._added.patterns(normalized=True).items():
            self._normalized_ids.setdefault(self._normalize_str(content), index)
        self._normalized_ids.pop("", None)
        self._raw_re = _alternation(self._raw_ids)
        self._normalized_re = _alternation(self._normalized_ids)

    def _template_changed(self) -> None:
        self._cls = (self.cls_token_id, self.cls_token)
        self._sep = (self.sep_token_id, self.sep_token)

    def _tokenizer_json(self) -> str:
        return json.dumps(self._spec_json(), indent=2, ensure_ascii=False)

    # -- one sequence ------------------------------------------------------------------------------------------

    def _encode_words(
        self,
        normalized: str,
        alignment: tuple[Any, Any, int],
        span: tuple[int, int],
        out: tuple,
        word: int,
        fixed: bool,
    ) -> int:
        """Split ``normalized[span[0]:span[1]]`` into words and WordPiece them; returns the next word index."""
        ids, tokens, offsets, words = out
        starts, ends, base = alignment
        cache, wordpiece = self._wordpiece.cache, self._wordpiece
        for match in self._word_re.finditer(normalized, *span):
            piece = match.group()
            piece_ids, piece_tokens, spans = cache.get(piece) or wordpiece(piece)
            begin, end = match.span()
            if len(piece_ids) == 1:  # most words are one piece spanning the whole word
                ids.append(piece_ids[0])
                tokens.append(piece_tokens[0])
                words.append(word)
                if starts is None:
                    offsets.append((base + begin, base + end))
                else:
                    offsets.append((base + starts[begin], base + (ends[end - 1] if ends else starts[end - 1] + 1)))
            else:
                ids.extend(piece_ids)
                tokens.extend(piece_tokens)
                words.extend([word] * len(piece_ids))
                if starts is None:
                    shift = base + begin
                    offsets.extend([(shift + s, shift + e) for s, e in spans])
                elif ends is None:
                    offsets.extend([(base + starts[begin + s], base + starts[begin + e - 1] + 1) for s, e in spans])
                else:
                    offsets.extend([(base + starts[begin + s], base + ends[begin + e - 1]) for s, e in spans])
            if not fixed:
                word += 1
        return word

    def _encode_segment(self, text: str, base: int, out: tuple[list, list, list, list], word: int, fixed: bool) -> int:
        """Normalise one segment free of raw-matched added tokens, split off the normalised ones, WordPiece the
        rest; returns the next word index."""
        normalized, starts, ends = self._normalizer.normalize(text)
        alignment = (starts, ends, base)
        found = self._normalized_re
        if found is None or found.search(normalized) is None:
            return self._encode_words(normalized, alignment, (0, len(normalized)), out, word, fixed)
        ids, tokens, offsets, words = out
        position = 0
        for match in found.finditer(normalized):
            start, end = match.span()
            if start > position:
                word = self._encode_words(normalized, alignment, (position, start), out, word, fixed)
            ids.append(self._normalized_ids[match.group()])
            tokens.append(match.group())
            offsets.append(_original(starts, ends, base, start, end))
            words.append(word)
            if not fixed:
                word += 1
            position = end
        if position < len(normalized):
            word = self._encode_words(normalized, alignment, (position, len(normalized)), out, word, fixed)
        return word

    def _encode_text(self, text: str, out: tuple[list, list, list, list], word: int, fixed: bool) -> int:
        added = self._raw_re
        if added is None or added.search(text) is None:
            return self._encode_segment(text, 0, out, word, fixed)
        ids, tokens, offsets, words = out
        position = 0
        for match in added.finditer(text):
            start, end = match.span()
            if start > position:
                word = self._encode_segment(text[position:start], position, out, word, fixed)
            content = match.group()
            ids.append(self._raw_ids[content])
            tokens.append(content)
            offsets.append((start, end))
            words.append(word)
            if not fixed:
                word += 1
            position = end
        if position < len(text):
            word = self._encode_segment(text[position:], position, out, word, fixed)
        return word

    def _encode_sequence(self, value: str | Sequence[str], is_split_into_words: bool) -> Encoding:
        out: tuple[list, list, list, list] = ([], [], [], [])
        if is_split_into_words:
            for index, word in enumerate(value):
                self._encode_text(word, out, index, fixed=True)  # offsets are relative to each word
        else:
            self._encode_text(value, out, 0, fixed=False)  # type: ignore[arg-type]
        return Encoding(*out)

    def _encode_batch(self, inputs: list[tuple[Any, Any]], options: EncodeOptions) -> list[Encoding]:
        encodings = []
        add_special_tokens, truncation = options.add_special_tokens, options.truncation
        for text, pair in inputs:
            first = self._encode_sequence(text, options.is_split_into_words)
            second = None if pair is None else self._encode_sequence(pair, options.is_split_into_words)
            if truncation is not None:
                added = self.num_special_tokens_to_add(second is not None) if add_special_tokens else 0
                limit = truncation.max_length - added
                truncate_pair(first, second, limit, truncation.strategy, truncation.stride, truncation.direction)
            encodings.append(
                post_process(first, second, add_special_tokens=add_special_tokens, cls=self._cls, sep=self._sep)
            )
        if options.padding is not None:
            pad_encodings(encodings, options.padding, self.pad_token_id, self.pad_token)
        return encodings


def _alternation(patterns: dict[str, int]) -> re.Pattern[str] | None:
    """A regex matching the leftmost, then longest, of ``patterns`` (None when there are none)."""
    contents = sorted(patterns, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, contents))) if contents else None


def _original(starts: list[int] | None, ends: list[int] | None, base: int, begin: int, end: int) -> tuple[int, int]:
    """The span of the original text that normalised chars ``begin:end`` came from."""
    if starts is None:
        return base + begin, base + end
    return base + starts[begin], base + (ends[end - 1] if ends else starts[end - 1] + 1)
