"""``DistilBertTokenizer``: BERT's WordPiece tokenizer in pure Python (standard library + numpy).

Same outputs as :class:`~distilbert_mf.tokenization.DistilBertTokenizerFast` (ids, offsets, masks, word and
sequence ids, overflow windows), offsets into the original text included, which transformers only offered in its
fast tokenizer. Pipeline per input: split off special/added tokens -> normalise each remaining segment with an
alignment map (:mod:`.basic`) -> split words -> WordPiece (:mod:`.wordpiece`, cached per word) -> truncate ->
``[CLS] A [SEP] (B [SEP])`` -> pad (:mod:`.encoding`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from distilbert_mf.tokenization.base import DistilBertTokenizerBase, PaddingSpec, TruncationSpec
from distilbert_mf.tokenization.basic import BertNormalizer
from distilbert_mf.tokenization.encoding import Encoding, pad_encodings, post_process, truncate_pair
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
        unsupported = [t["content"] for t in self.added_tokens if not t.get("plain", True)]
        if unsupported:
            raise ValueError(
                f"added tokens {unsupported} use lstrip/rstrip/single_word/normalized options that the pure-Python "
                "tokenizer does not implement; use DistilBertTokenizerFast for this tokenizer.json"
            )
        self._normalizer = BertNormalizer(
            lowercase=self.do_lower_case,
            strip_accents=self.strip_accents,
            handle_chinese_chars=self.tokenize_chinese_chars,
            nfc=self.nfc,
        )
        self._word_re = self._normalizer.word_re
        self._wordpiece = WordPiece(
            self.vocab, unk_token=self.unk_token, max_input_chars_per_word=self.max_input_chars_per_word
        )
        # leftmost, then longest, match of any added token in the raw text (as tokenizers' Aho-Corasick)
        contents = sorted((t["content"] for t in self.added_tokens), key=len, reverse=True)
        self._added_re = re.compile("|".join(map(re.escape, contents))) if contents else None
        self._cls = (self.cls_token_id, self.cls_token)
        self._sep = (self.sep_token_id, self.sep_token)

    def _tokenizer_json(self) -> str:
        return json.dumps(self._spec_json(), indent=2, ensure_ascii=False)

    # -- one sequence ------------------------------------------------------------------------------------------

    def _encode_segment(self, text: str, base: int, out: tuple[list, list, list, list], word: int, fixed: bool) -> int:
        """Normalise, split and WordPiece one segment free of added tokens; returns the next word index."""
        ids, tokens, offsets, words = out
        normalized, starts, ends = self._normalizer.normalize(text)
        cache, wordpiece = self._wordpiece.cache, self._wordpiece
        for match in self._word_re.finditer(normalized):
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

    def _encode_text(self, text: str, out: tuple[list, list, list, list], word: int, fixed: bool) -> int:
        added = self._added_re
        if added is None or added.search(text) is None:
            return self._encode_segment(text, 0, out, word, fixed)
        ids, tokens, offsets, words = out
        position = 0
        for match in added.finditer(text):
            start, end = match.span()
            if start > position:
                word = self._encode_segment(text[position:start], position, out, word, fixed)
            content = match.group()
            ids.append(self._added_ids[content])
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

    def _encode_batch(
        self,
        inputs: list[tuple[Any, Any]],
        *,
        add_special_tokens: bool,
        is_split_into_words: bool,
        truncation: TruncationSpec | None,
        padding: PaddingSpec | None,
    ) -> list[Encoding]:
        encodings = []
        for text, pair in inputs:
            first = self._encode_sequence(text, is_split_into_words)
            second = None if pair is None else self._encode_sequence(pair, is_split_into_words)
            if truncation is not None:
                added = self.num_special_tokens_to_add(second is not None) if add_special_tokens else 0
                truncate_pair(
                    first,
                    second,
                    truncation.max_length - added,
                    truncation.strategy,
                    truncation.stride,
                    truncation.direction,
                )
            encodings.append(
                post_process(first, second, add_special_tokens=add_special_tokens, cls=self._cls, sep=self._sep)
            )
        if padding is not None:
            pad_encodings(
                encodings,
                length=padding.length,
                pad_to_multiple_of=padding.pad_to_multiple_of,
                pad_id=self.pad_token_id,
                pad_token=self.pad_token,
                direction=padding.direction,
            )
        return encodings
