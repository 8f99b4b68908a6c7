"""Added tokens: tokens matched whole in the text and never split, on top of the WordPiece vocabulary.

:class:`AddedToken` has the fields of ``tokenizers.AddedToken``; :class:`AddedVocabulary` keeps them exactly as the
``tokenizers`` library's added vocabulary does (the same ids, the same return counts, the same two match lists), so
the pure-Python tokenizer and the ``tokenizers``-backed one agree after any sequence of ``add_tokens`` /
``add_special_tokens`` calls:

- a token whose content is already in the vocabulary (base or added) keeps that id; a new one gets the next id
  after the largest (at least ``len(vocab)``);
- adding a token equal (every field) to one already held is ignored and not counted; the same content with
  other options replaces the options and counts;
- special tokens are skipped by ``decode(skip_special_tokens=True)``; a content once added as special stays so;
- ``normalized=False`` tokens are matched in the raw text, ``normalized=True`` ones in the normalised text (so
  ``"NewWord"`` matches ``"newword"`` and ``"NEWWORD"`` when lower-casing).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distilbert_mf.tokenization.checks import type_error

logger = logging.getLogger(__name__)

__all__ = ["TOKEN_FLAGS", "AddedToken", "AddedVocabulary", "as_added_token", "decoder_tokens"]

TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


@dataclass(frozen=True)
class AddedToken:
    """A token kept whole wherever it occurs (the fields and defaults of ``tokenizers.AddedToken``).

    Args:
        content: the token's text.
        single_word: match only where it is not part of a longer word.
        lstrip: the match also takes the whitespace on its left.
        rstrip: the match also takes the whitespace on its right.
        normalized: match against the normalised text (lower-cased, accents stripped, ...); None: ``not special``.
        special: a special token (skipped by ``decode(skip_special_tokens=True)``).
    """

    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool | None = None
    special: bool = False
    _default_normalized: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.content, str):
            raise type_error("AddedToken content", self.content, "a str")
        for name in TOKEN_FLAGS:
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "normalized" and value is None):
                raise type_error(f"AddedToken {name}", value, "True or False")
        if self.normalized is None:
            object.__setattr__(self, "normalized", not self.special)
            object.__setattr__(self, "_default_normalized", True)

    def __str__(self) -> str:
        return self.content

    def to_json(self) -> dict[str, Any]:
        """The token's fields as ``tokenizer.json`` / ``tokenizer_config.json`` store them (without the id)."""
        return {"content": self.content, **{name: getattr(self, name) for name in TOKEN_FLAGS}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AddedToken:
        """From a stored entry (``tokenizer.json`` ``added_tokens``, ``added_tokens_decoder``); absent flags take
        ``tokenizers``' defaults."""
        special = bool(data.get("special", False))
        normalized = data.get("normalized")
        return cls(
            str(data["content"]),
            single_word=bool(data.get("single_word", False)),
            lstrip=bool(data.get("lstrip", False)),
            rstrip=bool(data.get("rstrip", False)),
            normalized=None if normalized is None else bool(normalized),
            special=special,
        )

    @property
    def plain(self) -> bool:
        """No ``single_word`` / ``lstrip`` / ``rstrip``: matched as is (all the pure-Python tokenizer does)."""
        return not (self.single_word or self.lstrip or self.rstrip)


def as_added_token(value: Any, *, special: bool, what: str) -> AddedToken:
    """An :class:`AddedToken` from a str, an :class:`AddedToken` or a ``tokenizers.AddedToken``.

    ``special=True`` (``add_special_tokens`` / ``add_tokens(..., special_tokens=True)``) makes the token special;
    a str then is not normalised (as ``tokenizers``), a str added as a plain token is.
    """
    if isinstance(value, str):
        return AddedToken(value, normalized=not special, special=special)
    if isinstance(value, AddedToken):
        token, default_normalized = value, value._default_normalized
    elif type(value).__module__.split(".")[0] == "tokenizers" and type(value).__name__ == "AddedToken":
        state = value.__getstate__()
        token = AddedToken(state["content"], **{name: bool(state[name]) for name in TOKEN_FLAGS})
        default_normalized = True  # the library's object does not say whether normalized was given
    else:
        raise type_error(what, value, "a str or an AddedToken")
    if special and not token.special:
        # as tokenizers' add_special_tokens: the token becomes special, and unnormalised unless normalized was given
        normalized = False if default_normalized else token.normalized
        token = dataclasses.replace(token, special=True, normalized=normalized)
    return token


class AddedVocabulary:
    """The added tokens of one tokenizer on top of its base ``vocab`` (``tokenizers``' AddedVocabulary rules)."""

    def __init__(self, vocab: Mapping[str, int], by_id: Mapping[int, str] | None = None) -> None:
        self.vocab = vocab
        self.vocab_by_id = by_id if by_id is not None else {index: token for token, index in vocab.items()}
        self._ids: dict[str, int] = {}  # content -> id, every added token
        self._tokens: dict[int, AddedToken] = {}  # id -> token
        self._plain: list[AddedToken] = []  # in the order added (classic tokens)
        self._special: list[AddedToken] = []  # in the order added
        self._special_contents: set[str] = set()
        # ids once added as normalised tokens: the library shows them in their normalised form (decode, id_to_token)
        self.normalized_ids: set[int] = set()

    def __len__(self) -> int:
        """How many distinct tokens, base vocabulary and added ones together."""
        return len(self.vocab) + sum(1 for content in self._ids if content not in self.vocab)

    def add(self, tokens: Sequence[AddedToken]) -> int:
        """Add ``tokens`` (in order); returns how many were not already held as they are."""
        for token in tokens:
            if token.special and token.content and token.content not in self._special_contents:
                self._special.append(token)
                self._special_contents.add(token.content)
        held = set(self._tokens.values())
        ignored = 0
        for token in tokens:
            if not token.content or token in held:
                ignored += 1
                continue
            index = self.token_to_id(token.content)
            if index is None:
                size = len(self.vocab)
                top = max(self._ids.values(), default=None)
                index = size if top is None else (top + 1 if top >= size or size == 0 else size)
            self._ids[token.content] = index
            previous = self._tokens.get(index)
            if previous is not None:
                held.discard(previous)
            self._tokens[index] = token
            held.add(token)
            if token.normalized:
                self.normalized_ids.add(index)
            if token.content not in self._special_contents:
                self._plain.append(token)
        return len(tokens) - ignored

    def token_to_id(self, content: str) -> int | None:
        index = self._ids.get(content)
        return index if index is not None else self.vocab.get(content)

    def id_to_token(self, index: int) -> str | None:
        token = self._tokens.get(index)
        return token.content if token is not None else self.vocab_by_id.get(index)

    def get(self, content: str) -> AddedToken | None:
        """The added token with this content (None when it is only in the base vocabulary, or unknown)."""
        index = self._ids.get(content)
        return None if index is None else self._tokens[index]

    def is_special(self, content: str) -> bool:
        return content in self._special_contents

    @property
    def decoder(self) -> dict[int, AddedToken]:
        """``{id: AddedToken}`` of every added token, by id."""
        return dict(sorted(self._tokens.items()))

    @property
    def encoder(self) -> dict[str, int]:
        """``{content: id}`` of every added token, by id."""
        return {token.content: index for index, token in sorted(self._tokens.items())}

    def listed(self) -> Iterable[AddedToken]:
        """Every token as the two match lists hold it (special ones first), with the options it was added with."""
        yield from self._special
        yield from self._plain

    def patterns(self, normalized: bool) -> dict[str, int]:
        """``{content: id}`` to match in the raw text (``normalized=False``) or in the normalised text."""
        return {t.content: self._ids[t.content] for t in self.listed() if bool(t.normalized) == normalized}

    def unsupported(self) -> list[str]:
        """Contents of tokens with ``single_word`` / ``lstrip`` / ``rstrip``."""
        return sorted({t.content for t in [*self.listed(), *self._tokens.values()] if not t.plain})


def decoder_tokens(decoder: Mapping[Any, Any], specials: Iterable[str]) -> list[tuple[int, AddedToken]]:
    """``(id, AddedToken)`` by id from an ``added_tokens_decoder`` mapping (``{id: AddedToken | dict | str}``;
    a bare str, as in ``added_tokens.json``, is special when it names a special token)."""
    if not isinstance(decoder, Mapping):
        raise type_error("added_tokens_decoder", decoder, "a {id: AddedToken} mapping")
    special = set(specials)
    out = []
    for key, value in decoder.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"added_tokens_decoder keys must be token ids (ints), got {key!r}") from None
        if isinstance(value, str):
            token = AddedToken(value, special=value in special)
        elif isinstance(value, Mapping):
            token = AddedToken.from_json(value)
        else:
            token = as_added_token(value, special=False, what=f"added_tokens_decoder[{index}]")
        out.append((index, token))
    return sorted(out, key=lambda item: item[0])
