"""The shipped Unicode tables equal what the installed ``tokenizers`` library does, code point by code point."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from distilbert_mf.tokenization import _generate_tables, _unicode_tables
from distilbert_mf.tokenization.basic import BertNormalizer, unicode_data


def test_sampled_code_points_match_the_library() -> None:
    """A quick check on 3,000 code points (all table kinds + random); the slow test below checks all of them."""
    tokenizers = pytest.importorskip("tokenizers")
    rng = random.Random(0)
    points = [first for first, _ in _unicode_tables.CONTROL + _unicode_tables.PUNCTUATION + _unicode_tables.CHINESE]
    points += [entry[0] for entry in rng.sample(_unicode_tables.DECOMPOSITION, 500)]
    points += rng.sample(sorted(_unicode_tables.COMBINING_CLASS), 300)
    points += [rng.randrange(0x110000) for _ in range(2000)]
    chars = [chr(cp) for cp in points if not 0xD800 <= cp < 0xE000]
    pre = tokenizers.pre_tokenizers.BertPreTokenizer()
    punctuation = unicode_data().punctuation
    for lowercase, strip in ((True, None), (False, None), (False, True), (True, False)):
        ours = BertNormalizer(lowercase=lowercase, strip_accents=strip)
        theirs = tokenizers.normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip)
        for ch in chars:
            assert ours.map_char(ch) == theirs.normalize_str(ch), (hex(ord(ch)), lowercase, strip)
    for ch in chars:
        pieces = [piece for piece, _ in pre.pre_tokenize_str(f"a{ch}b")]
        assert (pieces == ["a", ch, "b"]) == (ord(ch) in punctuation), hex(ord(ch))


@pytest.mark.slow
def test_tables_are_up_to_date() -> None:
    """Re-measure every table from the installed library (about 8 s); regenerate with _generate_tables if stale."""
    pytest.importorskip("tokenizers")
    shipped = Path(_unicode_tables.__file__).read_text(encoding="utf-8")
    assert _generate_tables.render(_generate_tables.build_tables()) == shipped
