"""Vocabulary, special and added tokens, ids <-> tokens <-> text: the part of the tokenizer API that is not the call.

:class:`VocabularyMixin` is mixed into :class:`~distilbert_mf.tokenization.base.DistilBertTokenizerBase`. It owns
``vocab`` (the WordPiece vocabulary), the :class:`~.added_tokens.AddedVocabulary` and the named special tokens, and
implements transformers' ``add_tokens`` / ``add_special_tokens`` semantics (transformers 5's, which are those of the
``tokenizers`` library). A backend reacts to changes through three hooks: ``_check_addable``,
``_added_tokens_changed`` and ``_template_changed``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from distilbert_mf.tokenization.added_tokens import AddedToken, AddedVocabulary, as_added_token
from distilbert_mf.tokenization.checks import as_id_list, check_words, type_error

logger = logging.getLogger(__name__)

__all__ = ["REQUIRED_SPECIALS", "SPECIAL_TOKEN_NAMES", "VocabularyMixin", "clean_up_tokenization"]

# the special tokens DistilBERT needs, and their defaults (BERT's)
REQUIRED_SPECIALS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
# every named special token transformers knows, in its order (bos / eos are None unless set)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", *REQUIRED_SPECIALS)
EXTRA_KEYS = ("additional_special_tokens", "extra_special_tokens")  # transformers 4 / 5 names of one list

# transformers' clean_up_tokenization, in order; tokenizers' WordPiece decoder also turns " do not" into " don't"
_CLEANUP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
_DECODER_CLEANUP = (*_CLEANUP[:7], (" do not", " don't"), *_CLEANUP[7:])


def _replace_all(text: str, replacements: tuple[tuple[str, str], ...]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: no space before punctuation and English contractions."""
    return _replace_all(text, _CLEANUP)


def _special_token(name: str) -> property:
    """The named special token ``name`` (a str, or None for an unset ``bos_token`` / ``eos_token``)."""

    def get(self: VocabularyMixin) -> str | None:
        return self._specials.get(name)

    def set_(self: VocabularyMixin, value: Any) -> None:
        self._set_special(name, value)

    return property(get, set_, doc=f"The ``{name}``; assigning a token the vocabulary lacks is an error.")


def _special_id(name: str) -> property:
    """A read-only ``<name>_id`` property: the id of the special token stored in attribute ``name``."""

    def token_id(self: VocabularyMixin) -> int | None:
        token = self._specials.get(name)
        return None if token is None else self._token_id(token)

    return property(token_id, doc=f"Id of ``{name}`` (None when it is not set).")


def _as_extra_list(value: Any, what: str) -> list[AddedToken]:
    if not isinstance(value, (list, tuple)):
        raise type_error(what, value, "a list of str or AddedToken")
    return [as_added_token(item, special=True, what=f"{what}[{i}]") for i, item in enumerate(value)]


class VocabularyMixin:
    """Vocabulary and special tokens of a DistilBERT tokenizer (see the module docstring)."""

    vocab: dict[str, int]
    never_split: tuple[str, ...]
    decoder_cleanup: bool
    clean_up_tokenization_spaces: bool
    _specials: dict[str, str | None]
    _additional: list[str]
    _added: AddedVocabulary

    # -- backend hooks -----------------------------------------------------------------------------------------

    def _normalize_str(self, text: str) -> str:
        raise NotImplementedError

    def _check_addable(self, tokens: Sequence[AddedToken]) -> None:
        """Refuse tokens the backend cannot match (before anything changes).

        A normalised token whose normalised form is empty (only characters the normalizer removes, such as
        U+200B) is refused: the ``tokenizers`` library would match it between every two characters.
        """
        for token in tokens:
            if token.normalized and token.content and not self._normalize_str(token.content):
                raise ValueError(
                    f"added token {token.content!r} is normalised away entirely (it holds only characters the "
                    "normalizer removes), so it cannot be matched in normalised text; add it as "
                    "AddedToken(..., normalized=False) to match it as written"
                )

    def _added_tokens_changed(self, tokens: Sequence[AddedToken]) -> None:
        """``tokens`` were just added to ``self._added``."""

    def _template_changed(self) -> None:
        """``cls_token`` or ``sep_token`` changed: ``[CLS] A [SEP]`` must use the new ones."""

    # -- building ----------------------------------------------------------------------------------------------

    def _init_vocabulary(
        self,
        specials: Mapping[str, str | None],
        additional: Sequence[Any],
        file_tokens: Sequence[tuple[int, AddedToken]],
    ) -> None:
        """Added tokens from the files, then the special, extra special and ``never_split`` tokens.

        Named special tokens must be in the vocabulary (or the files' added tokens); extra special tokens the
        vocabulary lacks are added. The result is replayed by id so that a backend built from the same list holds
        the same state.
        """
        self._specials = dict(specials)
        extra_tokens = _as_extra_list(additional, "additional_special_tokens")
        self._additional = list(dict.fromkeys(t.content for t in extra_tokens))
        first = AddedVocabulary(self.vocab)
        for index, token in file_tokens:
            first.add([token])
            if first.token_to_id(token.content) != index:
                logger.warning(
                    "added token %r is stored with id %d but gets id %d (the ids of the vocabulary and added tokens "
                    "must follow each other)",
                    token.content,
                    index,
                    first.token_to_id(token.content),
                )
        named = [AddedToken(t, normalized=False, special=True) for t in self._specials.values() if t is not None]
        for token in [*named, *extra_tokens]:
            held = first.get(token.content)
            if held is not None and not held.special:
                first.add([dataclasses.replace(held, special=True)])
            elif held is None and (token.content in self.vocab or token not in named):  # named: must be known
                first.add([token])
        for content in self.never_split:
            if not isinstance(content, str) or not content:
                raise type_error("never_split entries", content, "non-empty str")
            if first.get(content) is not None:
                continue
            if content not in self.vocab:
                raise ValueError(f"never_split token {content!r} is not in the vocabulary")
            first.add([AddedToken(content, normalized=False, special=False)])
        self._added = AddedVocabulary(self.vocab, first.vocab_by_id)
        self._added.add(list(first.decoder.values()))
        missing = [token.content for token in named if self._token_id(token.content) is None]
        if missing:
            raise ValueError(f"special tokens {missing} are not in the vocabulary ({len(self.vocab)} tokens)")

    # -- the vocabulary ----------------------------------------------------------------------------------------

    def _token_id(self, token: str) -> int | None:
        return self._added.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (``vocab.txt``), added tokens not included."""
        return len(self.vocab)

    def __len__(self) -> int:
        """Size of the full vocabulary, added tokens included (what ``resize_token_embeddings`` takes)."""
        return len(self._added)

    def get_vocab(self) -> dict[str, int]:
        """``{token: id}`` for every token, added tokens included."""
        vocab = dict(self.vocab)
        vocab.update(self._added.encoder)
        return vocab

    def get_added_vocab(self) -> dict[str, int]:
        """``{token: id}`` of the added tokens (special tokens included), by id."""
        return self._added.encoder

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """``{content: id}`` of the added tokens, by id."""
        return self._added.encoder

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        """``{id: AddedToken}`` of the added tokens (special tokens included), by id."""
        return self._added.decoder

    # -- special tokens ----------------------------------------------------------------------------------------

    bos_token = _special_token("bos_token")
    eos_token = _special_token("eos_token")
    unk_token = _special_token("unk_token")
    sep_token = _special_token("sep_token")
    pad_token = _special_token("pad_token")
    cls_token = _special_token("cls_token")
    mask_token = _special_token("mask_token")
    bos_token_id = _special_id("bos_token")
    eos_token_id = _special_id("eos_token")
    unk_token_id = _special_id("unk_token")
    sep_token_id = _special_id("sep_token")
    pad_token_id = _special_id("pad_token")
    cls_token_id = _special_id("cls_token")
    mask_token_id = _special_id("mask_token")

    def _set_special(self, name: str, value: Any) -> None:
        if value is None and name not in REQUIRED_SPECIALS:
            self._specials[name] = None
            return
        content = value.content if isinstance(value, AddedToken) else value
        if not isinstance(content, str) or not content:
            raise type_error(name, value, "a non-empty str or an AddedToken")
        if self._token_id(content) is None:
            raise ValueError(
                f"{name}={content!r} is not in the vocabulary; add it with add_special_tokens({{{name!r}: {content!r}}})"
            )
        previous = self._specials.get(name)
        self._specials[name] = content
        if name in ("cls_token", "sep_token") and previous != content:
            self._template_changed()

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set: ``{"unk_token": "[UNK]", ...}`` (the extra ones are in
        :attr:`additional_special_tokens`)."""
        names = [*REQUIRED_SPECIALS, "bos_token", "eos_token"]
        return {name: self._specials[name] for name in names if self._specials.get(name) is not None}  # type: ignore[misc]

    @property
    def additional_special_tokens(self) -> list[str]:
        """The extra special tokens (``add_special_tokens({"additional_special_tokens": [...]})``)."""
        return list(self._additional)

    @property
    def extra_special_tokens(self) -> list[str]:
        """transformers 5's name for :attr:`additional_special_tokens`."""
        return list(self._additional)

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return [self._token_id(token) for token in self._additional]  # type: ignore[misc]

    @property
    def all_special_tokens(self) -> list[str]:
        """The named special tokens (transformers' order: bos, eos, unk, sep, pad, cls, mask), then the extra ones."""
        named = [self._specials.get(name) for name in SPECIAL_TOKEN_NAMES]
        return list(dict.fromkeys([t for t in named if t is not None] + self._additional))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_id(token) for token in self.all_special_tokens]  # type: ignore[misc]

    # -- adding tokens -----------------------------------------------------------------------------------------

    def _add(self, tokens: list[AddedToken]) -> int:
        self._check_addable(tokens)
        count = self._added.add(tokens)
        self._added_tokens_changed(tokens)
        return count

    def add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        """Add tokens that are never split: a str, an ``AddedToken`` (ours or ``tokenizers``') or a list of them.

        A new token gets the next id (``len(tok)`` grows: resize the model with
        ``model.resize_token_embeddings(len(tok))``). A str is matched against the normalised text (so with
        lower-casing ``"NewWord"`` also matches ``"newword"``) unless ``special_tokens=True``, which adds special,
        unnormalised tokens. Returns how many tokens were added or changed: a token already held with the same
        options counts 0, a vocabulary word made an added token counts 1 (as in transformers 5).
        """
        if not isinstance(special_tokens, bool):
            raise type_error("special_tokens", special_tokens, "True or False")
        if new_tokens is None or (isinstance(new_tokens, (str, list, tuple)) and not new_tokens):
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        tokens = [as_added_token(t, special=special_tokens, what=f"new_tokens[{i}]") for i, t in enumerate(new_tokens)]
        return self._add(tokens)

    def add_special_tokens(
        self,
        special_tokens_dict: Mapping[str, Any],
        replace_additional_special_tokens: bool = True,
        *,
        replace_extra_special_tokens: bool | None = None,
    ) -> int:
        """Set named special tokens and/or extra ones, adding those the vocabulary lacks; returns how many were added.

        Keys: ``bos_token``, ``eos_token``, ``unk_token``, ``sep_token``, ``pad_token``, ``cls_token``,
        ``mask_token`` (a str or ``AddedToken``) and ``additional_special_tokens`` (transformers 5:
        ``extra_special_tokens``; a list). The extra list replaces the current one, or with
        ``replace_additional_special_tokens=False`` extends it (tokens already listed are not added again). A new
        ``cls_token`` / ``sep_token`` is used by ``[CLS] A [SEP]`` at once. Nothing changes when a key or value is
        wrong (``ValueError`` / ``TypeError`` naming it).
        """
        replace = (
            replace_additional_special_tokens if replace_extra_special_tokens is None else replace_extra_special_tokens
        )
        if not isinstance(replace, bool):
            raise type_error("replace_additional_special_tokens", replace, "True or False")
        if not special_tokens_dict:
            return 0
        if not isinstance(special_tokens_dict, Mapping):
            raise type_error("special_tokens_dict", special_tokens_dict, "a dict such as {'cls_token': '<cls>'}")
        if all(key in special_tokens_dict for key in EXTRA_KEYS):
            raise ValueError(f"give one of {EXTRA_KEYS} (transformers 4 / 5 names of the same list), not both")
        allowed = (*SPECIAL_TOKEN_NAMES, *EXTRA_KEYS)
        named: dict[str, AddedToken] = {}
        extra: list[AddedToken] | None = None
        for key, value in special_tokens_dict.items():
            if key in EXTRA_KEYS:
                extra = _as_extra_list(value, key)
            elif key in SPECIAL_TOKEN_NAMES:
                named[key] = as_added_token(value, special=True, what=key)
            else:
                raise ValueError(f"{key!r} is not a special token name; the keys are {list(allowed)}")
        to_add = list(named.values())
        new: list[AddedToken] = []
        if extra is not None:
            listed = set(self._additional)
            new = [token for token in extra if replace or token.content not in listed]
            to_add += new
        count = self._add(to_add)
        if extra is not None:
            contents = list(dict.fromkeys(token.content for token in new))
            self._additional = contents if replace and contents else list(dict.fromkeys(self._additional + contents))
        for key, token in named.items():
            self._set_special(key, token.content)
        return count

    # -- templates ---------------------------------------------------------------------------------------------

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Tokens the template adds: 2 for ``[CLS] A [SEP]``, 3 for ``[CLS] A [SEP] B [SEP]``."""
        return 3 if pair else 2

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` from lists of ids."""
        out = [self.cls_token_id, *token_ids_0, self.sep_token_id]
        if token_ids_1 is not None:
            out += [*token_ids_1, self.sep_token_id]
        return out  # type: ignore[return-value]

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 for special tokens, 0 for sequence tokens."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in as_id_list(token_ids_0)]
        mask = [1] + [0] * len(token_ids_0) + [1]
        if token_ids_1 is not None:
            mask += [0] * len(token_ids_1) + [1]
        return mask

    # -- ids, tokens and text ----------------------------------------------------------------------------------

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of tokens; unknown tokens get ``unk_token_id``."""
        if isinstance(tokens, str):
            index = self._token_id(tokens)
            return self.unk_token_id if index is None else index  # type: ignore[return-value]
        unk = self.unk_token_id
        ids = []
        for token in check_words(tokens, "tokens"):
            index = self._token_id(token)
            ids.append(unk if index is None else index)
        return ids  # type: ignore[return-value]

    def _id_token(self, index: int) -> str:
        token = self._added.id_to_token(index)
        if token is None:
            raise ValueError(f"token id {index} is out of range: this vocabulary has ids 0..{len(self) - 1}")
        if index in self._added.normalized_ids:  # as the tokenizers library shows a normalised added token
            return self._normalize_str(token)
        return token

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Tokens of ids (an id outside the vocabulary raises ValueError)."""
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            return self._id_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_token(i) for i in as_id_list(ids) if i not in skip]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Join WordPiece tokens back into text (``##`` pieces glued to the previous token)."""
        return self._join_tokens(list(tokens))

    def _join_tokens(self, tokens: list[str]) -> str:
        pieces = []
        for i, token in enumerate(tokens):
            if i:
                token = token[2:] if token.startswith("##") else " " + token
            if self.decoder_cleanup:
                token = _replace_all(token, _DECODER_CLEANUP)
            pieces.append(token)
        return "".join(pieces)

    def decode(
        self, token_ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of a sequence of ids (list, numpy array or 1-D tensor).

        Tokens are joined as ``tokenizers``' WordPiece decoder does; ``skip_special_tokens`` leaves out every token
        added as special; ``clean_up_tokenization_spaces`` (default: the tokenizer's setting) additionally removes
        spaces before punctuation, as transformers does.
        """
        tokens = [self._id_token(i) for i in as_id_list(token_ids)]
        if skip_special_tokens:
            tokens = [token for token in tokens if not self._added.is_special(token)]
        text = self._join_tokens(tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        """:meth:`decode` for each row of a batch (list of lists, 2-D array or tensor)."""
        if hasattr(sequences, "numpy") and not isinstance(sequences, np.ndarray):
            sequences = sequences.numpy()
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in sequences]
