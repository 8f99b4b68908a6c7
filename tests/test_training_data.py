"""distilbert_mf.training.data: each task prepared with our tokenizers, on real data, and bad input refused early."""

from __future__ import annotations

import numpy as np
import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.training import BatchLoader, DataError, DataOptions, prepare_dataset, read_records
from distilbert_mf.training.data import canonical_task, select_records


@pytest.fixture(scope="module")
def tok(shared_data):
    from distilbert_mf import DistilBertTokenizerFast

    return DistilBertTokenizerFast.from_pretrained(shared_data / "distilbert-base-uncased-tokenizer")


@pytest.fixture(scope="module")
def slow_tok(shared_data):
    from distilbert_mf import DistilBertTokenizer

    return DistilBertTokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")


def test_tasks_and_aliases():
    assert canonical_task("ner") == "token-classification"
    assert canonical_task("sentiment-analysis") == "text-classification"
    with pytest.raises(ValueError, match=r"unknown task 'translation'"):
        canonical_task("translation")


# -- text classification -------------------------------------------------------------------------------------


def test_sst2_dev_real(shared_data, tok, slow_tok):
    path = shared_data / "glue_sst2" / "dev.tsv"
    ds = prepare_dataset("text-classification", path, tok, config=DistilBertConfig())
    assert len(ds) == 872 and ds.label_names == ("0", "1") and ds.problem_type == "single_label_classification"
    assert ds.labels.dtype == np.int64 and ds.labels.sum() == 444
    expected = tok("it 's a charming and often affecting journey . ", truncation=True, max_length=128)["input_ids"]
    assert ds.input_ids[0].tolist() == expected
    assert ds.lengths.max() <= 128
    assert ds.config_overrides() == {
        "num_labels": 2,
        "id2label": {0: "0", 1: "1"},
        "label2id": {"0": 0, "1": 1},
        "problem_type": "single_label_classification",
    }
    slow = prepare_dataset("text-classification", path, slow_tok, max_seq_length=64)
    fast = prepare_dataset("text-classification", path, tok, max_seq_length=64)
    assert all(np.array_equal(a, b) for a, b in zip(slow.input_ids, fast.input_ids))


def test_pairs_names_and_evaluation_labels(tok):
    train = [
        {"sentence1": "a cat sat", "sentence2": "on a mat", "label": "entailment"},
        {"sentence1": "a dog ran", "sentence2": "away " * 100, "label": "neutral"},
        {"sentence1": "no", "sentence2": "yes", "label": "contradiction"},
    ]
    ds = prepare_dataset("text-classification", train, tok, max_seq_length=16)
    assert ds.label_names == ("contradiction", "entailment", "neutral")  # sorted, as transformers' run_glue
    assert ds.labels.tolist() == [1, 2, 0]
    assert ds.input_ids[0].tolist() == tok("a cat sat", "on a mat")["input_ids"]
    assert ds.lengths[1] == 16  # the pair was truncated longest-first
    dev = prepare_dataset(
        "text-classification", [{"sentence1": "x", "sentence2": "y", "label": "neutral"}], tok, labels_from=ds
    )
    assert dev.labels.tolist() == [2] and dev.label_names == ds.label_names
    with pytest.raises(
        DataError, match=r"<list> row 0: label \(column 'label'\) 'unknown' is not among the labels seen in training"
    ):
        prepare_dataset(
            "text-classification", [{"sentence1": "x", "sentence2": "y", "label": "unknown"}], tok, labels_from=ds
        )


def test_label_names_and_num_labels(tok):
    data = [{"text": "good", "label": "1"}, {"text": "bad", "label": "0"}, {"text": "meh", "label": "2"}]
    ds = prepare_dataset("text-classification", data, tok, label_names=["neg", "pos", "mixed"])
    assert ds.labels.tolist() == [1, 0, 2]  # ids index the names
    named = prepare_dataset("text-classification", [{"text": "x", "label": "pos"}], tok, label_names=["neg", "pos"])
    assert named.labels.tolist() == [1]
    with pytest.raises(DataError, match=r"label \(column 'label'\) 2 is outside num_labels=2 \(allowed 0..1\)"):
        prepare_dataset("text-classification", data, tok, num_labels=2)
    with pytest.raises(DataError, match=r"is not among label_names"):
        prepare_dataset("text-classification", data, tok, label_names=["neg", "pos"])
    wide = prepare_dataset("text-classification", data, tok, num_labels=5)
    assert wide.label_names == ("0", "1", "2", "3", "4")
    with pytest.raises(ValueError, match=r"num_labels=3 but label_names name 2 classes"):
        prepare_dataset("text-classification", data[:2], tok, label_names=["neg", "pos"], num_labels=3)


def test_regression_and_multi_label(tok, tmp_path):
    reg = prepare_dataset("text-classification", [{"text": "a", "label": "3.8"}, {"text": "b", "label": "1"}], tok)
    assert reg.problem_type == "regression" and reg.labels.dtype == np.float32 and reg.num_labels == 1
    assert reg.labels.tolist() == pytest.approx([3.8, 1.0])
    assert reg.config_overrides()["problem_type"] == "regression"
    batch = BatchLoader(reg, 2, shuffle=False).make_batch(0, 0, np.array([0, 1]))
    assert batch["labels"].dtype == np.float32
    path = tmp_path / "ml.jsonl"
    path.write_text('{"text": "a", "label": ["sport", "news"]}\n{"text": "b", "label": []}\n', encoding="utf-8")
    ml = prepare_dataset("text-classification", path, tok)
    assert ml.problem_type == "multi_label_classification" and ml.label_names == ("news", "sport")
    assert ml.labels.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    tsv = tmp_path / "ml.tsv"
    tsv.write_text("text\tlabel\na\tnews,sport\nb\tsport\n", encoding="utf-8")
    ml2 = prepare_dataset("text-classification", tsv, tok, options=DataOptions(label_separator=","))
    assert ml2.labels.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    with pytest.raises(DataError, match=r"ml.tsv line 2: regression label \(column 'label'\) must be a number"):
        prepare_dataset("text-classification", tsv, tok, options=DataOptions(problem_type="regression"))


def test_text_classification_bad_input(tok, tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("review\tstars\ngood\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x.tsv: no text column among \['text', 'sentence', 'sentence1'\]"):
        prepare_dataset("text-classification", path, tok)
    with pytest.raises(DataError, match=r"x.tsv: no column 'label'"):
        prepare_dataset("text-classification", path, tok, options=DataOptions(text_column="review"))
    with pytest.raises(ValueError, match=r"max_seq_length=600 is larger than the model's max_position_embeddings=512"):
        prepare_dataset("text-classification", path, tok, max_seq_length=600, config=DistilBertConfig())
    with pytest.raises(ValueError, match=r"the tokenizer has 30522 tokens but the model's vocab_size is 99"):
        prepare_dataset("text-classification", path, tok, config=DistilBertConfig(vocab_size=99))
    with pytest.raises(DataError, match=r"row 0: column 'text' must hold text, got int"):
        prepare_dataset("text-classification", [{"text": 3, "label": 0}], tok)


# -- token classification ----------------------------------------------------------------------------------------


def test_conll_alignment_real(shared_data, tok):
    path = shared_data / "conll2003" / "test-sentences-0000-2699.txt"
    records = select_records(read_records(path, task="ner"), range(200))
    ds = prepare_dataset("ner", records, tok)
    names = ds.label_names
    assert names == ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O")
    for row in range(len(ds)):
        words = records.rows[row]["tokens"]
        tags = records.rows[row]["ner_tags"]
        encoded = tok(words, is_split_into_words=True, truncation=True, max_length=128)
        word_ids = encoded.word_ids(0)
        labels = ds.labels[row]
        assert labels.shape == (len(word_ids),)
        seen = set()
        for position, word in enumerate(word_ids):
            if word is None or word in seen:
                assert labels[position] == -100
            else:
                assert names[labels[position]] == tags[word]
                seen.add(word)
        assert ds.first_piece[row].sum() == len(seen)
    assert ds.config_overrides()["id2label"][3] == "B-PER"


def test_label_all_tokens_turns_b_into_i(tok):
    data = [
        {"tokens": ["Xylophonists", "rock"], "ner_tags": ["B-PER", "O"]},
        {"tokens": ["Ann"], "ner_tags": ["I-PER"]},
    ]
    ds = prepare_dataset("token-classification", data, tok, options=DataOptions(label_all_tokens=True))
    pieces = tok(["Xylophonists", "rock"], is_split_into_words=True).word_ids(0)
    names = ds.label_names
    got = [names[i] if i >= 0 else None for i in ds.labels[0]]
    expected = [None] + ["B-PER"] + ["I-PER"] * (pieces.count(0) - 1) + ["O", None]
    assert got == expected
    plain = prepare_dataset("token-classification", data, tok)
    assert [names[i] if i >= 0 else None for i in plain.labels[0]] == [None, "B-PER"] + [None] * (
        pieces.count(0) - 1
    ) + ["O", None]


def test_datasets_class_names_become_the_labels(tok):
    from test_training_readers import FakeDataset  # a stand-in for datasets.Dataset (not installed here)

    ds = prepare_dataset("ner", FakeDataset(), tok)
    assert ds.label_names == ("O", "B-PER", "I-PER")
    assert ds.labels[0].tolist() == [-100, 1, 0, -100]
    assert ds.config_overrides()["label2id"] == {"O": 0, "B-PER": 1, "I-PER": 2}


def test_token_classification_bad_input(tok):
    with pytest.raises(DataError, match=r"row 0: column 'ner_tags' must hold one tag per word \(2 words\)"):
        prepare_dataset("ner", [{"tokens": ["a", "b"], "ner_tags": ["O"]}], tok)
    with pytest.raises(DataError, match=r"no column 'tags'"):
        prepare_dataset("ner", [{"tokens": ["a"], "ner_tags": ["O"]}], tok, options=DataOptions(tags_column="tags"))
    train = prepare_dataset("ner", [{"tokens": ["a"], "ner_tags": ["O"]}], tok)
    with pytest.raises(DataError, match=r"tag .* 'B-PER' is not among the labels seen in training"):
        prepare_dataset("ner", [{"tokens": ["a"], "ner_tags": ["B-PER"]}], tok, labels_from=train)


# -- question answering ------------------------------------------------------------------------------------------


def test_squad_windows_and_positions_real(shared_data, tok):
    records = select_records(read_records(shared_data / "squad" / "dev-v1.1-articles-00-39.json"), range(300))
    ds = prepare_dataset("qa", records, tok, max_seq_length=128, options=DataOptions(doc_stride=32))
    assert len(ds) > ds.num_examples == 300  # long contexts give several windows
    assert ds.lengths.max() <= 128 and ds.config_overrides() == {"num_labels": 2}
    qa = ds.qa
    exact = answered = 0
    for row in range(len(ds)):
        example = int(qa.example_of_row[row])
        s, e = int(ds.start_positions[row]), int(ds.end_positions[row])
        offsets, seq = qa.offsets[row], qa.sequence_ids[row]
        gold = records.rows[example]["answers"]
        start_char = gold["answer_start"][0]
        end_char = start_char + len(gold["text"][0])
        context_tokens = np.flatnonzero(seq == 1)
        inside = offsets[context_tokens[0]][0] <= start_char and offsets[context_tokens[-1]][1] >= end_char
        if not inside:
            assert (s, e) == (0, 0)  # the answer is not (wholly) in this window: [CLS]
            continue
        answered += 1
        assert seq[s] == 1 and seq[e] == 1 and s <= e
        assert offsets[s][0] <= start_char < offsets[s][1] or offsets[s][0] == start_char
        assert offsets[e][0] < end_char <= offsets[e][1]
        token_starts = {offsets[t][0] for t in context_tokens}
        token_ends = {offsets[t][1] for t in context_tokens}
        if start_char in token_starts and end_char in token_ends:  # the answer is a whole number of tokens
            assert qa.contexts[example][offsets[s][0] : offsets[e][1]] == gold["text"][0]
            exact += 1
    assert answered >= 300 and exact > 0.9 * answered
    # consecutive windows of one example share doc_stride context tokens
    first_two = np.flatnonzero(qa.example_of_row == qa.example_of_row[np.argmax(np.bincount(qa.example_of_row))])[:2]
    a, b = (ds.input_ids[r][qa.sequence_ids[r] == 1].tolist() for r in first_two)
    assert a[-32:] == b[:32]


def test_unanswerable_and_bad_answers(tok):
    context = "The quick brown fox jumps over the lazy dog."
    data = [
        {
            "id": "q1",
            "question": "  What jumps?",
            "context": context,
            "answers": {"text": ["brown fox"], "answer_start": [10]},
        },
        {"id": "q2", "question": "Who sleeps?", "context": context, "answers": {"text": [], "answer_start": []}},
    ]
    ds = prepare_dataset("question-answering", data, tok)
    assert ds.qa.example_ids == ["q1", "q2"] and ds.qa.answers == [["brown fox"], []]
    offsets = ds.qa.offsets[0]
    assert context[offsets[ds.start_positions[0]][0] : offsets[ds.end_positions[0]][1]] == "brown fox"
    assert (ds.start_positions[1], ds.end_positions[1]) == (0, 0)
    assert ds.input_ids[0][1] == tok("What")["input_ids"][1]  # leading spaces of the question stripped
    bad = [{**data[0], "answers": {"text": ["fox"], "answer_start": [400]}}]
    with pytest.raises(DataError, match=r"row 0: answer 'fox' at answer_start=400 does not fit in its context"):
        prepare_dataset("question-answering", bad, tok)
    long_question = [{**data[0], "question": "why " * 60, "context": "word " * 300}]
    with pytest.raises(DataError, match=r"row 0: the question takes 60 tokens, leaving 65 of max_seq_length=128"):
        prepare_dataset(
            "question-answering", long_question, tok, max_seq_length=128, options=DataOptions(doc_stride=100)
        )
    with pytest.raises(ValueError, match=r"doc_stride=128 must be smaller than max_seq_length=64"):
        prepare_dataset("question-answering", data, tok, max_seq_length=64)


# -- masked LM ------------------------------------------------------------------------------------------------


def test_masked_lm_lines_and_blocks(tok, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello world\n\n" + "long " * 30 + "\nshort one\n", encoding="utf-8")
    lines = prepare_dataset("masked-lm", path, tok, max_seq_length=12)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert [r[0] for r in lines.input_ids] == [cls] * len(lines) and all(r[-1] == sep for r in lines.input_ids)
    assert lines.lengths.tolist() == [4, 12, 12, 12, 4]  # 30 'long' tokens split 10 + 10 + 10
    blocks = prepare_dataset("masked-lm", path, tok, max_seq_length=12, options=DataOptions(line_by_line=False))
    stream = [t for text in ["hello world", "long " * 30, "short one"] for t in tok(text)["input_ids"]]
    assert np.concatenate(blocks.input_ids).tolist() == stream
    empty = tmp_path / "empty.txt"
    empty.write_text("[CLS]\n[SEP] [PAD]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no usable tokens"):
        prepare_dataset("masked-lm", empty, tok)


def padded_ids(ds, width):
    ids = np.full((len(ds), width), ds.pad_token_id, dtype=np.int64)
    for i, row in enumerate(ds.input_ids):
        ids[i, : len(row)] = row
    return ids


def test_masked_lm_masking_statistics(tok):
    text = " ".join(["the cat sat on the mat and looked at the unbelievably uncharacteristic dog"] * 20)
    ds = prepare_dataset("masked-lm", [{"text": text}] * 40, tok, max_seq_length=128)
    loader = BatchLoader(ds, 40, shuffle=False, seed=3)
    batch = next(iter(loader))
    ids = padded_ids(ds, batch["input_ids"].shape[1])[:40]
    labels = batch["labels"]
    targets = labels != -100
    assert np.array_equal(labels[targets], ids[targets])
    special = np.isin(ids, tok.all_special_ids)
    assert not targets[special].any()
    rate = targets.sum() / (~special).sum()
    assert 0.14 < rate < 0.16
    masked = batch["input_ids"][targets]
    assert 0.77 < np.mean(masked == tok.mask_token_id) < 0.83
    kept = np.mean(masked == ids[targets])
    assert 0.08 < kept < 0.12
    assert np.array_equal(batch["input_ids"][~targets], ids[~targets])
    again = next(iter(BatchLoader(ds, 40, shuffle=False, seed=3)))
    assert np.array_equal(again["input_ids"], batch["input_ids"])


def test_whole_word_masking_masks_every_piece(tok):
    text = " ".join(["unbelievably uncharacteristic xylophonists"] * 30)
    ds = prepare_dataset("masked-lm", [{"text": text}] * 8, tok, options=DataOptions(whole_word_mask=True))
    batch = ds.collate(np.arange(8), rng=np.random.default_rng(1))
    targets = batch["labels"] != -100
    ids = padded_ids(ds, batch["input_ids"].shape[1])[:8]
    continuation = np.array([tok.convert_ids_to_tokens(int(i)).startswith("##") for i in ids.ravel()]).reshape(
        ids.shape
    )
    assert targets.any()
    # a ## piece is a target exactly when the token before it is
    assert np.array_equal(targets[:, 1:][continuation[:, 1:]], targets[:, :-1][continuation[:, 1:]])


# -- multiple choice ----------------------------------------------------------------------------------------------


def test_multiple_choice_swag_columns(tok):
    data = [
        {"sent1": "He opened the door.", "sent2": "He", "ending0": "walked in.", "ending1": "ate it.", "label": "0"},
        {
            "sent1": "She sang.",
            "sent2": "The crowd",
            "ending0": "cheered loudly for a long time.",
            "ending1": "left.",
            "label": 1,
        },
    ]
    ds = prepare_dataset("multiple-choice", data, tok, options=DataOptions(choice_columns=("ending0", "ending1")))
    assert ds.labels.tolist() == [0, 1]
    batch = ds.collate(np.array([0, 1]), pad_to_multiple_of=8)
    assert batch["input_ids"].shape == (2, 2, 16) and batch["attention_mask"].shape == (2, 2, 16)
    first = tok("She sang.", "The crowd cheered loudly for a long time.")["input_ids"]
    assert batch["input_ids"][1, 0, : len(first)].tolist() == first
    assert batch["attention_mask"][1, 1].sum() == len(tok("She sang.", "The crowd left.")["input_ids"])
    listed = prepare_dataset(
        "multiple-choice",
        [{"sent1": "x", "choices": ["a", "b", "c"], "label": 2}],
        tok,
        options=DataOptions(choices_column="choices"),
    )
    assert listed.input_ids[0].shape[0] == 3
    with pytest.raises(
        DataError, match=r"row 0: label 3 \(column 'label'\) must be the index of the right choice, 0..2"
    ):
        prepare_dataset(
            "multiple-choice",
            [{"sent1": "x", "choices": ["a", "b", "c"], "label": 3}],
            tok,
            options=DataOptions(choices_column="choices"),
        )
