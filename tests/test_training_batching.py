"""distilbert_mf.training.batching: seeded, length-grouped batches; resumable positions; data-parallel shards."""

from __future__ import annotations

import numpy as np
import pytest

from distilbert_mf.training import BatchLoader, DataError, DataPosition, TrainingPlan, iter_steps, prepare_dataset


@pytest.fixture(scope="module")
def tok(shared_data):
    from distilbert_mf import DistilBertTokenizerFast

    return DistilBertTokenizerFast.from_pretrained(shared_data / "distilbert-base-uncased-tokenizer")


@pytest.fixture(scope="module")
def sst2(shared_data, tok):
    return prepare_dataset("text-classification", shared_data / "glue_sst2" / "dev.tsv", tok)


@pytest.fixture(scope="module")
def corpus(shared_data, tok):
    from distilbert_mf.training import read_records

    sentences = read_records(shared_data / "glue_sst2" / "dev.tsv").rows[:203]
    return prepare_dataset("masked-lm", [{"text": r["sentence"]} for r in sentences], tok, max_seq_length=64)


def same_batches(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def test_every_row_once_per_epoch_and_seeded(sst2):
    loader = BatchLoader(sst2, 32, seed=7)
    assert len(loader) == 28  # 872 / 32 rounded up
    for epoch in range(3):
        rows = np.concatenate(loader.batch_rows(epoch))
        assert sorted(rows.tolist()) == list(range(872))
    assert all(np.array_equal(a, b) for a, b in zip(loader.batch_rows(1), BatchLoader(sst2, 32, seed=7).batch_rows(1)))
    assert not np.array_equal(np.concatenate(loader.batch_rows(0)), np.concatenate(loader.batch_rows(1)))
    other = BatchLoader(sst2, 32, seed=8).batch_rows(0)
    assert not np.array_equal(np.concatenate(loader.batch_rows(0)), np.concatenate(other))
    assert same_batches(list(loader.epoch(2)), list(BatchLoader(sst2, 32, seed=7).epoch(2)))


def test_length_grouping_pads_less_and_longest_first(sst2):
    grouped = BatchLoader(sst2, 16, seed=0)
    plain = BatchLoader(sst2, 16, seed=0, group_by_length=False)

    def padding(loader):
        return sum(b["input_ids"].size - b["attention_mask"].sum() for b in loader.epoch(0))

    assert padding(grouped) < 0.3 * padding(plain)
    first = grouped.batch_rows(0)[0]
    assert sst2.lengths[first].max() == sst2.lengths.max()


def test_padding_and_dtypes(sst2):
    loader = BatchLoader(sst2, 8, seed=1, pad_to_multiple_of=8)
    for rows, batch in loader.epoch_with_rows(0):
        width = batch["input_ids"].shape[1]
        assert width % 8 == 0 and width - 8 < sst2.lengths[rows].max() <= width
        assert batch["input_ids"].dtype == batch["attention_mask"].dtype == batch["labels"].dtype == np.int64
        assert np.array_equal(batch["attention_mask"].sum(axis=1), sst2.lengths[rows])
        assert np.all(batch["input_ids"][batch["attention_mask"] == 0] == sst2.pad_token_id)
        assert np.array_equal(batch["labels"], sst2.labels[rows])


def test_unshuffled_keeps_dataset_order(sst2):
    rows = np.concatenate(BatchLoader(sst2, 100, shuffle=False).batch_rows(0))
    assert rows.tolist() == list(range(872))


def test_last_batch_modes(sst2):
    assert len(BatchLoader(sst2, 100, last_batch="drop")) == 8
    filled = BatchLoader(sst2, 100, last_batch="fill", seed=2).batch_rows(0)
    assert all(len(b) == 100 for b in filled) and len(filled) == 9
    with pytest.raises(ValueError, match=r"last_batch must be one of"):
        BatchLoader(sst2, 100, last_batch="pad")
    with pytest.raises(DataError, match=r"no full batch"):
        BatchLoader(sst2, 1000, last_batch="drop")


def test_shards_are_slices_of_the_global_batch(corpus):
    single = list(BatchLoader(corpus, 8, seed=5, last_batch="fill").epoch(1))
    shards = [list(BatchLoader(corpus, 8, seed=5, last_batch="fill", world_size=4, rank=r).epoch(1)) for r in range(4)]
    assert all(len(s) == len(single) for s in shards)
    for i, whole in enumerate(single):
        for key in whole:  # masked-LM masking too: it is drawn on the global batch
            joined = np.concatenate([shards[r][i][key] for r in range(4)])
            assert np.array_equal(joined, whole[key])
        assert shards[2][i]["input_ids"].shape == (2, whole["input_ids"].shape[1])


def test_shard_errors(sst2):
    with pytest.raises(ValueError, match=r"batch_size=30 .* not divisible by world_size=4"):
        BatchLoader(sst2, 30, world_size=4)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 2\)"):
        BatchLoader(sst2, 32, world_size=2, rank=2)
    with pytest.raises(ValueError, match=r"last batch has 72 rows .* world_size=5"):
        BatchLoader(sst2, 100, world_size=5)
    assert BatchLoader(sst2, 100, world_size=4).local_batch_size == 25


def test_resume_mid_epoch_gives_the_remaining_batches(corpus):
    loader = BatchLoader(corpus, 16, seed=11)
    whole = list(loader.epoch(3))
    resumed = list(BatchLoader(corpus, 16, seed=11).epoch(3, start=5))
    assert same_batches(whole[5:], resumed)


def test_steps_accumulation_and_remainder(sst2):
    loader = BatchLoader(sst2, 100, seed=0)  # 9 batches per epoch
    plan = loader.plan(num_train_epochs=2, gradient_accumulation_steps=4)
    assert (plan.update_steps_per_epoch, plan.max_steps, plan.epochs) == (3, 6, 2)
    steps = list(iter_steps(loader, plan))
    assert [len(s.batches) for s in steps] == [4, 4, 1, 4, 4, 1]
    assert [s.global_step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [s.epoch_progress for s in steps] == pytest.approx([4 / 9, 8 / 9, 1, 1 + 4 / 9, 1 + 8 / 9, 2])
    assert steps[2].position == DataPosition(1, 0) and steps[3].position == DataPosition(1, 4)
    assert same_batches(steps[4].batches, list(loader.epoch(1))[4:8])
    assert [s.num_items() for s in steps] == [sum(len(b["labels"]) for b in s.batches) for s in steps]
    assert sum(s.num_items() for s in steps[:3]) == 872


def test_resumed_steps_equal_the_uninterrupted_run(corpus):
    loader = BatchLoader(corpus, 8, seed=3)  # 26 batches per epoch
    plan = loader.plan(max_steps=20, gradient_accumulation_steps=3)  # 9 steps per epoch
    full = list(iter_steps(loader, plan))
    assert len(full) == 20 and full[-1].epoch == 2
    stop = full[10]
    resumed = list(iter_steps(BatchLoader(corpus, 8, seed=3), plan, start=stop.position, global_step=stop.global_step))
    assert [s.global_step for s in resumed] == list(range(12, 21))
    for a, b in zip(full[11:], resumed):
        assert (a.epoch, a.batch_index, a.position) == (b.epoch, b.batch_index, b.position)
        assert same_batches(a.batches, b.batches)
    assert plan.position_of(stop.global_step) == stop.position
    with pytest.raises(ValueError, match=r"a step starts at a multiple of gradient_accumulation_steps=3"):
        next(iter_steps(loader, plan, start=DataPosition(0, 4)))
    with pytest.raises(ValueError, match=r"build the plan with loader.plan"):
        next(iter_steps(loader, TrainingPlan(batches_per_epoch=5)))


def test_num_items_counts_targets(corpus):
    loader = BatchLoader(corpus, 8, seed=0)
    step = next(iter_steps(loader, loader.plan(max_steps=1, gradient_accumulation_steps=2)))
    assert step.num_items() == sum(int((b["labels"] != -100).sum()) for b in step.batches) > 0
    with pytest.raises(KeyError, match="start_positions"):
        step.num_items("start_positions")


def test_masked_lm_batches_redrawn_each_step(corpus):
    loader = BatchLoader(corpus, 8, seed=0, shuffle=False)
    a, b = loader.make_batch(0, 0, np.arange(8)), loader.make_batch(0, 1, np.arange(8))
    assert np.array_equal(a["attention_mask"], b["attention_mask"])
    assert not np.array_equal(a["labels"], b["labels"])
    again = BatchLoader(corpus, 8, seed=0, shuffle=False).make_batch(0, 0, np.arange(8))
    assert np.array_equal(a["labels"], again["labels"]) and np.array_equal(a["input_ids"], again["input_ids"])


def test_bad_arguments(sst2):
    with pytest.raises(TypeError, match=r"TaskDataset"):
        BatchLoader([1, 2], 4)
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer"):
        BatchLoader(sst2, 0)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0"):
        BatchLoader(sst2, 4, seed=-1)
    with pytest.raises(ValueError, match=r"DataPosition.batch_index"):
        DataPosition(0, -1)


def test_widen_batch_pads_to_a_multiple_without_changing_meaning() -> None:
    from distilbert_mf.training import widen_batch

    batch = {
        "input_ids": np.array([[2, 5, 3], [2, 3, 0]]),
        "attention_mask": np.array([[1, 1, 1], [1, 1, 0]]),
        "labels": np.array([[-100, 4, -100], [-100, -100, -100]]),
    }
    wide = widen_batch(batch, 8, pad_token_id=0, token_level_labels=True)
    assert wide["input_ids"].shape == (2, 8) and (wide["input_ids"][:, 3:] == 0).all()
    assert (wide["attention_mask"][:, 3:] == 0).all() and (wide["labels"][:, 3:] == -100).all()
    np.testing.assert_array_equal(wide["input_ids"][:, :3], batch["input_ids"])
    assert widen_batch(batch, 8, pad_token_id=0, token_level_labels=True, max_width=5)["input_ids"].shape == (2, 5)
    sentence = {"input_ids": batch["input_ids"], "labels": np.array([1, 0])}
    assert widen_batch(sentence, 4, pad_token_id=0, token_level_labels=False)["labels"].shape == (2,)
    assert widen_batch(batch, None, pad_token_id=0, token_level_labels=True)["input_ids"].shape == (2, 3)
