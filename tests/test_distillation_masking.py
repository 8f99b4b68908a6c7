"""distilbert_mf.distillation.masking: token counts, max(count, 1)^-0.7 probabilities, the per-batch draw."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distilbert_mf.distillation import FrequencyMasker, mask_batch, masking_probabilities, token_counts
from distilbert_mf.training import BatchLoader, prepare_dataset

MASK, PAD, CLS, SEP = 4, 0, 1, 2
SPECIAL = (PAD, CLS, SEP, MASK)


def test_counts_and_probabilities_by_hand():
    counts = token_counts([[1, 5, 5, 6, 2], [1, 5, 2, 0, 0]], vocab_size=8)
    assert counts.tolist() == [2, 2, 2, 0, 0, 3, 1, 0]
    probabilities = masking_probabilities(counts, SPECIAL)
    weights = np.array([0, 0, 0, 1, 0, 3**-0.7, 1, 1])  # unseen tokens count as 1, special tokens never
    np.testing.assert_allclose(probabilities, weights / weights.sum())
    assert probabilities[list(SPECIAL)].sum() == 0
    with pytest.raises(ValueError, match=r"outside the vocabulary"):
        token_counts([[9]], vocab_size=8)
    with pytest.raises(ValueError, match=r"no usable tokens"):
        masking_probabilities(token_counts([[1, 2, 0]], 8), SPECIAL)
    with pytest.raises(ValueError, match=r"no usable tokens"):
        masking_probabilities(np.zeros(8, dtype=np.int64), SPECIAL)


def make_batch(rng, batch=16, length=40, vocab=50):
    ids = rng.integers(5, vocab, size=(batch, length))
    lengths = rng.integers(10, length + 1, size=batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    ids[:, 0] = CLS
    ids[np.arange(batch), lengths - 1] = SEP
    ids[mask == 0] = PAD
    return ids, mask


def test_draw_count_and_80_10_10():
    rng = np.random.default_rng(0)
    ids, mask = make_batch(rng)
    probabilities = masking_probabilities(token_counts(ids, 50), SPECIAL)
    masked_share = kept_share = 0.0
    draws = 300
    for seed in range(draws):
        masked, labels = mask_batch(ids, mask, probabilities, np.random.default_rng(seed), mask_token_id=MASK)
        targets = labels != -100
        assert targets.sum() == math.ceil(0.15 * mask.sum())  # 15 % of the batch's non-padding tokens
        assert not targets[np.isin(ids, SPECIAL)].any()
        assert np.array_equal(labels[targets], ids[targets])
        assert np.array_equal(masked[~targets], ids[~targets])
        masked_share += np.mean(masked[targets] == MASK) / draws
        kept_share += np.mean(masked[targets] == ids[targets]) / draws
    assert masked_share == pytest.approx(0.8, abs=0.01)
    assert kept_share == pytest.approx(0.1 + 0.1 / 50, abs=0.01)  # kept, plus random draws that hit the same id


def test_rare_tokens_are_drawn_more_often():
    vocab = 10
    # token 5 is 100 times as frequent as token 6 in the corpus
    counts = np.zeros(vocab, dtype=np.int64)
    counts[5], counts[6] = 1000, 10
    probabilities = masking_probabilities(counts, SPECIAL)
    ids = np.array([[CLS] + [5] * 20 + [6] * 20 + [SEP]])
    mask = np.ones_like(ids)
    hits = np.zeros(vocab)
    for seed in range(400):
        _, labels = mask_batch(ids, mask, probabilities, np.random.default_rng(seed), mask_token_id=MASK)
        for token in (5, 6):
            hits[token] += np.sum(labels == token)
    # per position, token 6 is (1000 / 10) ** 0.7 = 25 times as likely; drawing 7 of 40 without replacement
    assert hits[6] / hits[5] > 5


def test_seeded_and_capped():
    rng = np.random.default_rng(1)
    ids, mask = make_batch(rng)
    probabilities = masking_probabilities(token_counts(ids, 50), SPECIAL)
    a = mask_batch(ids, mask, probabilities, np.random.default_rng(7), mask_token_id=MASK)
    b = mask_batch(ids, mask, probabilities, np.random.default_rng(7), mask_token_id=MASK)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # 5 non-padding tokens, all wanted (mlm_probability 1), but only 3 may be masked: capped at 3
    tiny = np.array([[CLS, 7, 8, 9, SEP, PAD, PAD, PAD, PAD, PAD]])
    _, labels = mask_batch(
        tiny,
        (tiny != PAD).astype(int),
        probabilities,
        np.random.default_rng(0),
        mask_token_id=MASK,
        mlm_probability=1.0,
    )
    assert (labels != -100).sum() == 3
    with pytest.raises(ValueError, match=r"same"):
        mask_batch(ids, mask[:, :3], probabilities, rng, mask_token_id=MASK)


def test_masker_plugs_into_the_batch_loader(shared_data):
    from distilbert_mf import DistilBertTokenizerFast
    from distilbert_mf.training import read_records

    tok = DistilBertTokenizerFast.from_pretrained(shared_data / "distilbert-base-uncased-tokenizer")
    texts = [{"text": r["sentence"]} for r in read_records(shared_data / "glue_sst2" / "dev.tsv").rows[:100]]
    corpus = prepare_dataset("masked-lm", texts, tok, max_seq_length=64)
    masker = FrequencyMasker.from_corpus(corpus, tok)
    assert masker.token_probabilities[tok.all_special_ids].sum() == 0
    distil = corpus.with_masker(masker)
    loader = BatchLoader(distil, 10, seed=4)
    for batch in loader.epoch(0):
        targets = batch["labels"] != -100
        assert targets.sum() == math.ceil(0.15 * batch["attention_mask"].sum())
    first = next(iter(BatchLoader(distil, 10, seed=4).epoch(0)))
    again = next(iter(loader.epoch(0)))
    assert np.array_equal(first["input_ids"], again["input_ids"])
    with pytest.raises(ValueError, match=r"masked-lm data"):
        prepare_dataset("text-classification", [{"text": "a", "label": 0}], tok).with_masker(masker)
    with pytest.raises(ValueError, match=r"mlm_probability must be in"):
        FrequencyMasker(masker.token_probabilities, tok.mask_token_id, mlm_probability=0)
