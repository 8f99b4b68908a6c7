"""``DistilBertTokenizerFast``: the same tokenizer over Hugging Face's ``tokenizers`` library (Rust).

Built from a ``tokenizer.json`` (as published on the Hub) or from ``vocab.txt`` and the settings, through the
same ``tokenizer.json`` description the pure-Python tokenizer writes. Padding and truncation run inside the
library, exactly as transformers drives it, so the call costs little more than ``Tokenizer.encode_batch``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from distilbert_mf.tokenization import files as _files
from distilbert_mf.tokenization.added_tokens import AddedToken
from distilbert_mf.tokenization.base import DistilBertTokenizerBase
from distilbert_mf.tokenization.encoding import TruncationError
from distilbert_mf.tokenization.strategies import EncodeOptions, PaddingSpec, TruncationSpec

__all__ = ["DistilBertTokenizerFast"]


class DistilBertTokenizerFast(DistilBertTokenizerBase):
    """DistilBERT's tokenizer backed by ``tokenizers``; see :class:`~.base.DistilBertTokenizerBase` for the arguments.

    ``backend_tokenizer`` is the underlying ``tokenizers.Tokenizer``.
    """

    is_fast = True

    def _setup_backend(self) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as err:
            raise ImportError(
                "DistilBertTokenizerFast needs the 'tokenizers' package (pip install tokenizers); "
                f"DistilBertTokenizer gives the same results without it ({err})"
            ) from err

        data = self._tokenizer_file_data
        if data is None:
            data = self._spec_json()
        else:
            data = dict(data)  # shallow: only top-level entries are replaced below
            wanted = self._normalizer_json()
            if _files.bert_normalizer_settings(data.get("normalizer")) != _files.bert_normalizer_settings(wanted):
                data["normalizer"] = wanted  # the settings passed in (or tokenizer_config.json) win
            data["added_tokens"] = [_files.added_token_json(i, token) for i, token in self._added.decoder.items()]
            template = _files.template_tokens(data.get("post_processor"))
            if template is not None and template != {self.cls_token, self.sep_token}:
                data["post_processor"] = _files.post_processor_spec(*self._template())  # tokenizer_config.json wins
        data["truncation"] = None
        data["padding"] = None
        self._tokenizer = Tokenizer.from_str(json.dumps(data))
        self._state: tuple[Any, Any] = (None, None)

    def _normalize_str(self, text: str) -> str:
        normalizer = self._tokenizer.normalizer
        return text if normalizer is None else normalizer.normalize_str(text)

    def _added_tokens_changed(self, tokens: Sequence[AddedToken]) -> None:
        from tokenizers import AddedToken as LibraryToken

        self._tokenizer.add_tokens([LibraryToken(**token.to_json()) for token in tokens])
        wrong = [t.content for t in tokens if self._tokenizer.token_to_id(t.content) != self._token_id(t.content)]
        if wrong:  # the two bookkeepings follow the same rules; a difference is a bug
            raise RuntimeError(f"the tokenizers library gave added tokens {wrong} other ids than distilbert_mf")

    def _template_changed(self) -> None:
        from tokenizers import Tokenizer

        data = json.loads(self._tokenizer.to_str())
        data["post_processor"] = _files.post_processor_spec(*self._template())
        self._tokenizer.post_processor = Tokenizer.from_str(json.dumps(data)).post_processor

    @property
    def backend_tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` doing the work."""
        return self._tokenizer

    def _tokenizer_json(self) -> str:
        data = json.loads(self._tokenizer.to_str())
        data["truncation"] = None
        data["padding"] = None
        return json.dumps(data, indent=2, ensure_ascii=False)

    def _configure(self, truncation: TruncationSpec | None, padding: PaddingSpec | None) -> None:
        """Set the library's truncation and padding for this call (only when they change)."""
        if (truncation, padding) == self._state:
            return
        tokenizer = self._tokenizer
        if truncation is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(
                truncation.max_length,
                stride=truncation.stride,
                strategy=truncation.strategy,
                direction=truncation.direction,
            )
        if padding is None:
            tokenizer.no_padding()
        else:
            tokenizer.enable_padding(
                direction=padding.direction,
                pad_id=self.pad_token_id,
                pad_type_id=0,
                pad_token=self.pad_token,
                length=padding.length,
                pad_to_multiple_of=padding.pad_to_multiple_of,
            )
        self._state = (truncation, padding)

    def _encode_batch(self, inputs: list[tuple[Any, Any]], options: EncodeOptions) -> list[Any]:
        self._configure(options.truncation, options.padding)
        batch = [text if pair is None else (text, pair) for text, pair in inputs]
        try:
            return self._tokenizer.encode_batch(
                batch, add_special_tokens=options.add_special_tokens, is_pretokenized=options.is_split_into_words
            )
        except BaseException as err:  # the library reports some user errors as a Rust panic (a BaseException)
            raise _translate(err, options.truncation) from err


def _translate(err: BaseException, truncation: TruncationSpec | None) -> BaseException:
    message = str(err)
    if truncation is None:
        return err
    if "stride" in message:
        kept = re.search(r"max_len=(\d+)", message)
        return TruncationError(
            f"stride={truncation.stride} must be smaller than the number of tokens each truncated sequence keeps "
            f"({kept.group(1) if kept else '?'}, after removing the special tokens): lower stride or raise max_length"
        )
    if "Second sequence not provided" in message:
        return TruncationError("truncation='only_second' needs a pair of sequences, but only one text was given")
    if "too short" in message:
        which = "first" if truncation.strategy == "only_first" else "second"
        return TruncationError(
            f"truncation={truncation.strategy!r} must remove more tokens than the {which} sequence has to fit "
            f"max_length={truncation.max_length}: use truncation='longest_first' or a larger max_length"
        )
    return err
