"""Argument validation for the tokenizers: texts, word lists, batches, ints, ids, added tokens.

Every check raises a built-in exception (``TypeError`` for a wrong type, ``ValueError`` for a wrong value) that
names the argument, what it received and what is allowed. Nothing here tokenizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "Collected",
    "as_id_list",
    "check_int",
    "check_text",
    "check_texts",
    "check_words",
    "collect_batch",
    "collect_inputs",
    "single_input",
    "type_error",
]


class Collected(list):
    """Inputs already checked and paired, ``[(text, pair_or_None), ...]`` (what :meth:`batch_encode_plus` passes
    to the call, so that single texts and pairs can share one batch)."""


def type_error(what: str, value: Any, allowed: str) -> TypeError:
    """``TypeError("<what> must be <allowed>, got <type>")``, with a hint for bytes."""
    hint = " (decode bytes to str first, e.g. value.decode('utf-8'))" if isinstance(value, (bytes, bytearray)) else ""
    return TypeError(f"{what} must be {allowed}, got {type(value).__name__}{hint}")


def check_text(value: Any, what: str, allowed: str = "a str") -> str:
    """``value`` if it is a str of valid Unicode (no lone surrogates), else TypeError / ValueError."""
    if not isinstance(value, str):
        raise type_error(what, value, allowed)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"{what} holds a lone surrogate {value[err.start]!r} at index {err.start}, which is not valid "
                "Unicode text (decode the source bytes with errors='replace' to get valid text)"
            ) from None
    return value


def check_texts(values: Any, what: str, allowed: str) -> list[str]:
    """A list of checked texts from a list or tuple, else TypeError."""
    if not isinstance(values, (list, tuple)):
        raise type_error(what, values, allowed)
    return [check_text(item, f"{what}[{i}]") for i, item in enumerate(values)]


def check_words(value: Any, what: str) -> list[str]:
    """The words of one pre-split text (``is_split_into_words=True``)."""
    return check_texts(value, what, "a list of str (the words of one text, is_split_into_words=True)")


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    """ValueError unless ``value`` is an int (not a bool) ``>= minimum`` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def as_id_list(token_ids: Any) -> list[int]:
    """Ids from an int, a list, a numpy array or a framework tensor (1-D)."""
    if isinstance(token_ids, (int, np.integer)) and not isinstance(token_ids, bool):
        return [int(token_ids)]
    if hasattr(token_ids, "numpy") and not isinstance(token_ids, np.ndarray):
        token_ids = token_ids.numpy()  # torch / tf tensors (CPU)
    array = np.asarray(token_ids)
    if array.dtype == object or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"token ids must be ints, got {type(token_ids).__name__} of {array.dtype}")
    if array.ndim > 1:
        raise ValueError(f"decode takes one sequence of ids (1-D), got shape {array.shape}; use batch_decode")
    return [int(i) for i in array.reshape(-1)]


def _is_word_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def collect_inputs(text: Any, text_pair: Any, is_split_into_words: bool) -> tuple[bool, list[tuple[Any, Any]]]:
    """``(batched, [(text, pair_or_None), ...])`` for the call's ``text`` / ``text_pair``, types and batch sizes
    checked."""
    if isinstance(text, Collected):
        return True, list(text)
    if is_split_into_words:
        batched = _is_word_list(text) and len(text) > 0 and _is_word_list(text[0])
        if not batched:
            texts = [check_words(text, "text")]
            pairs = [None if text_pair is None else check_words(text_pair, "text_pair")]
        else:
            texts = [check_words(words, f"text[{i}]") for i, words in enumerate(text)]
            if text_pair is None:
                pairs = [None] * len(texts)
            else:
                if not _is_word_list(text_pair) or (text_pair and not _is_word_list(text_pair[0])):
                    raise type_error("text_pair", text_pair, "a list of word lists, like text")
                pairs = [check_words(words, f"text_pair[{i}]") for i, words in enumerate(text_pair)]
    elif isinstance(text, str):
        batched = False
        texts = [check_text(text, "text")]
        pairs = [None if text_pair is None else check_text(text_pair, "text_pair", "a str (like text) or None")]
    elif isinstance(text, (list, tuple)):
        batched = True
        for i, item in enumerate(text):
            check_text(item, f"text[{i}]", "a str (pass is_split_into_words=True for word lists)")
        texts = list(text)
        if text_pair is None:
            pairs = [None] * len(texts)
        else:
            pairs = check_texts(text_pair, "text_pair", "a list of str with one entry per text")  # type: ignore[assignment]
    else:
        raise type_error("text", text, "a str or a list of str (a batch)")
    if len(pairs) != len(texts):
        raise ValueError(
            f"text and text_pair must have the same batch size, got {len(texts)} texts and {len(pairs)} pairs"
        )
    return batched, list(zip(texts, pairs))


def collect_batch(batch: Any, is_split_into_words: bool) -> Collected:
    """``batch_encode_plus`` input: a list whose items are one text (a str, or a word list with
    ``is_split_into_words``) or a pair of them (a tuple or list of two)."""
    what = "batch_text_or_text_pairs"
    if not isinstance(batch, (list, tuple)):
        raise type_error(what, batch, "a list of texts or of (text, text_pair) pairs")
    out = Collected()
    for i, item in enumerate(batch):
        single = isinstance(item, str) or (
            is_split_into_words and _is_word_list(item) and not (item and _is_word_list(item[0]))
        )
        if single:
            check = check_words if is_split_into_words else check_text
            out.append((check(item, f"{what}[{i}]"), None))
            continue
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            allowed = "a word list or a pair of word lists" if is_split_into_words else "a str or a (text, pair)"
            shown = f"a {type(item).__name__} of {len(item)}" if isinstance(item, (list, tuple)) else None
            if shown is None:
                raise type_error(f"{what}[{i}]", item, allowed)
            raise ValueError(f"{what}[{i}] must be {allowed}, got {shown} items")
        check = check_words if is_split_into_words else check_text
        out.append((check(item[0], f"{what}[{i}][0]"), check(item[1], f"{what}[{i}][1]")))
    return out


def single_input(text: Any, is_split_into_words: bool) -> None:
    """TypeError unless ``text`` is a str (any word list passes with ``is_split_into_words``): the rule of the
    one-text methods (``encode``, ``encode_plus``, ``tokenize``)."""
    if not isinstance(text, str) and not is_split_into_words:
        raise type_error("text", text, "a str (use the tokenizer call or batch_encode_plus for batches)")
