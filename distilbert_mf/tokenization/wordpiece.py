"""Greedy longest-match-first WordPiece (BERT's subword model) in pure Python, with a per-word cache."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["WordPiece"]

# (ids, tokens, (start, end) char spans inside the word) of the pieces of one word
Pieces = tuple[tuple[int, ...], tuple[str, ...], tuple[tuple[int, int], ...]]


class WordPiece:
    """Split one normalised word into vocabulary pieces, ``##``-prefixed after the first.

    A word longer than ``max_input_chars_per_word`` chars, or one with a part no piece matches, becomes a single
    unknown token covering the whole word (as in BERT and ``tokenizers``).
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        *,
        unk_token: str = "[UNK]",
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        cache_size: int = 200_000,
    ) -> None:
        if unk_token not in vocab:
            raise ValueError(f"the unknown token {unk_token!r} is not in the vocabulary ({len(vocab)} tokens)")
        if not isinstance(max_input_chars_per_word, int) or max_input_chars_per_word < 1:
            raise ValueError(f"max_input_chars_per_word must be a positive int, got {max_input_chars_per_word!r}")
        self.vocab = vocab
        self.unk_token = unk_token
        self.unk_id = vocab[unk_token]
        self.prefix = continuing_subword_prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        n = len(continuing_subword_prefix)
        # no piece is longer than this many chars, so the search never starts beyond it
        self._longest = max(
            (len(t) - n if n and t.startswith(continuing_subword_prefix) else len(t) for t in vocab), default=1
        )
        self._longest = max(self._longest, 1)
        self.cache: dict[str, Pieces] = {}  # word -> pieces (read directly by the tokenizer's hot loop)
        self.cache_size = cache_size

    def __call__(self, word: str) -> Pieces:
        """The pieces of ``word`` (a non-empty normalised word without whitespace)."""
        pieces = self.cache.get(word)
        if pieces is None:
            pieces = self._split(word)
            if len(self.cache) >= self.cache_size:
                self.cache.clear()
            self.cache[word] = pieces
        return pieces

    def _split(self, word: str) -> Pieces:
        n = len(word)
        unknown = ((self.unk_id,), (self.unk_token,), ((0, n),))
        if n > self.max_input_chars_per_word:
            return unknown
        vocab, prefix, longest = self.vocab, self.prefix, self._longest
        ids: list[int] = []
        tokens: list[str] = []
        spans: list[tuple[int, int]] = []
        start = 0
        while start < n:
            end = min(n, start + longest)
            while end > start:
                token = prefix + word[start:end] if start else word[start:end]
                token_id = vocab.get(token)
                if token_id is not None:
                    ids.append(token_id)
                    tokens.append(token)
                    spans.append((start, end))
                    break
                end -= 1
            else:
                return unknown
            start = end
        return tuple(ids), tuple(tokens), tuple(spans)
