"""distilbert_mf.training.evaluation: model outputs -> metrics per task; SQuAD answers as the QA pipeline picks them."""

from __future__ import annotations

import numpy as np
import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.training import BatchLoader, DataOptions, Evaluator, prepare_dataset, read_records, select_records
from distilbert_mf.training import metrics as M


@pytest.fixture(scope="module")
def tok(shared_data):
    from distilbert_mf import DistilBertTokenizerFast

    return DistilBertTokenizerFast.from_pretrained(shared_data / "distilbert-base-uncased-tokenizer")


def one_hot_logits(ids, n, width=None):
    ids = np.asarray(ids)
    out = np.full((*ids.shape, n), -3.0, dtype=np.float32)
    np.put_along_axis(out, ids[..., None].clip(0), 3.0, axis=-1)
    return out


def test_sst2_accuracy_f1_mcc(shared_data, tok):
    ds = prepare_dataset("text-classification", shared_data / "glue_sst2" / "dev.tsv", tok)
    rng = np.random.default_rng(0)
    guess = np.where(rng.random(len(ds)) < 0.8, ds.labels, 1 - ds.labels)  # 80 % right
    evaluator = Evaluator(ds)
    for rows, _ in BatchLoader(ds, 64, seed=1).epoch_with_rows(0):  # shuffled: rows tell where each goes
        evaluator.add(rows, logits=one_hot_logits(guess[rows], 2))
    got = evaluator.compute()
    assert got == {
        "accuracy": pytest.approx(M.accuracy(guess, ds.labels)),
        "f1": pytest.approx(M.f1_score(guess, ds.labels)),
        "matthews_correlation": pytest.approx(M.matthews_corrcoef(guess, ds.labels)),
    }
    assert 0.75 < got["accuracy"] < 0.85
    evaluator.reset()
    evaluator.add(logits=one_hot_logits(guess[:10], 2))
    with pytest.raises(ValueError, match=r"outputs for 862 of the dataset's 872 rows are missing"):
        evaluator.compute()
    with pytest.raises(TypeError, match=r"takes \['logits'\]"):
        evaluator.add(start_logits=np.zeros((2, 3)))


def test_regression_multilabel_multiclass(tok):
    reg = prepare_dataset(
        "text-classification", [{"text": t, "label": v} for t, v in [("a", 1.0), ("b", 2.5), ("c", 4.0)]], tok
    )
    evaluator = Evaluator(reg)
    evaluator.add(logits=np.array([[1.1], [2.0], [4.2]]))
    got = evaluator.compute()
    assert got["pearson"] == pytest.approx(M.pearson([1.1, 2.0, 4.2], [1.0, 2.5, 4.0]))
    assert got["spearmanr"] == pytest.approx(1.0) and got["mse"] == pytest.approx((0.01 + 0.25 + 0.04) / 3)
    ml = prepare_dataset(
        "text-classification", [{"text": "a", "label": ["x", "y"]}, {"text": "b", "label": ["y"]}], tok
    )
    evaluator = Evaluator(ml)
    evaluator.add(logits=np.array([[2.0, 1.0], [-1.0, -0.5]]))  # second row misses "y"
    got = evaluator.compute()
    assert got["accuracy"] == 0.5 and got["f1_micro"] == pytest.approx(
        M.f1_score([[1, 1], [0, 0]], [[1, 1], [0, 1]], average="micro")
    )
    three = prepare_dataset("text-classification", [{"text": "a", "label": c} for c in "abcab"], tok)
    evaluator = Evaluator(three)
    evaluator.add(logits=one_hot_logits([0, 1, 2, 1, 1], 3))
    assert evaluator.compute()["f1"] == pytest.approx(M.f1_score([0, 1, 2, 1, 1], [0, 1, 2, 0, 1], average="macro"))


def test_conll_entity_f1_on_first_pieces(shared_data, tok):
    records = select_records(
        read_records(shared_data / "conll2003" / "test-sentences-0000-2699.txt", task="ner"), range(150)
    )
    ds = prepare_dataset("ner", records, tok, options=DataOptions(label_all_tokens=True))
    names = ds.label_names
    o = names.index("O")
    evaluator = Evaluator(ds)
    wrong_rows = set(range(0, 150, 3))
    for rows, batch in BatchLoader(ds, 16, shuffle=False, pad_to_multiple_of=8).epoch_with_rows(0):
        predicted = np.where(batch["labels"] >= 0, batch["labels"], o)
        for i, row in enumerate(rows):
            if row in wrong_rows:
                predicted[i] = o  # this sentence: nothing found
        evaluator.add(logits=one_hot_logits(predicted, len(names)))
    got = evaluator.compute()
    gold = [r["ner_tags"] for r in records.rows]
    expected_pred = [["O"] * len(t) if i in wrong_rows else t for i, t in enumerate(gold)]
    assert got == pytest.approx(M.entity_scores(gold, expected_pred))
    assert got["precision"] == 1.0 and 0.4 < got["recall"] < 0.9


class FakeQAModel:
    """Deterministic start/end logits from each token id and position (no framework)."""

    head = "question_answering"

    def __init__(self):
        self.config = DistilBertConfig(num_labels=2)

    @staticmethod
    def logits(input_ids):
        ids = np.asarray(input_ids, dtype=np.float64)
        positions = np.arange(ids.shape[-1], dtype=np.float64)
        start = np.sin(ids * 0.731 + positions * 0.05) * 4
        end = np.cos(ids * 1.37 - positions * 0.03) * 4
        return start.astype(np.float32), end.astype(np.float32)


def test_squad_predictions_equal_the_pipeline(shared_data, tok):
    from distilbert_mf.pipelines.frameworks import ModelAdapter
    from distilbert_mf.pipelines.question_answering import QuestionAnsweringPipeline

    class Adapter(ModelAdapter):
        framework = "fake"

        def forward(self, input_ids, attention_mask):
            start, end = FakeQAModel.logits(input_ids)
            return {"start_logits": start, "end_logits": end}

    records = select_records(read_records(shared_data / "squad" / "dev-v1.1-articles-00-39.json"), range(0, 400, 5))
    ds = prepare_dataset("qa", records, tok, max_seq_length=384, options=DataOptions(doc_stride=128))
    evaluator = Evaluator(ds, max_answer_length=15)
    for rows, batch in BatchLoader(ds, 8, seed=0).epoch_with_rows(0):
        start, end = FakeQAModel.logits(batch["input_ids"])
        evaluator.add(rows, start_logits=start, end_logits=end)
    ours = evaluator.predictions()
    pipe = QuestionAnsweringPipeline(Adapter(FakeQAModel()), tok)
    theirs = pipe([{"question": r["question"], "context": r["context"]} for r in records.rows])
    assert [ours[r["id"]] for r in records.rows] == [a["answer"] for a in theirs]
    refs = {r["id"]: r["answers"]["text"] for r in records.rows}
    assert evaluator.compute() == pytest.approx(M.squad_scores(ours, refs))


def test_squad_gold_positions_score_high(shared_data, tok):
    records = select_records(read_records(shared_data / "squad" / "dev-v1.1-articles-00-39.json"), range(200))
    ds = prepare_dataset("qa", records, tok, max_seq_length=192, options=DataOptions(doc_stride=64))
    evaluator = Evaluator(ds)
    for batch in BatchLoader(ds, 16, shuffle=False):
        rows = np.arange(len(batch["input_ids"]))
        start = np.full(batch["input_ids"].shape, -8.0)
        end = start.copy()
        start[rows, batch["start_positions"]] = 8.0
        end[rows, batch["end_positions"]] = 8.0
        evaluator.add(start_logits=start, end_logits=end)
    got = evaluator.compute()
    assert got["exact_match"] > 90 and got["f1"] > 93  # misses: gold answers that end inside a word


def test_masked_lm_and_multiple_choice(tok):
    ds = prepare_dataset("masked-lm", [{"text": "the cat sat on the mat " * 5}] * 4, tok)
    loader = BatchLoader(ds, 4, shuffle=False, seed=0)
    evaluator = Evaluator(ds)
    for batch in loader:
        labels = batch["labels"]
        predicted = np.where(labels >= 0, labels, 0)
        predicted[0, np.flatnonzero(labels[0] >= 0)[:1]] = 5  # one wrong
        evaluator.add(logits=one_hot_logits(predicted, len(tok)), labels=labels)
    targets = int((batch["labels"] >= 0).sum())
    assert evaluator.compute() == {"accuracy": pytest.approx((targets - 1) / targets)}
    mc = prepare_dataset(
        "multiple-choice",
        [{"sent1": "x", "choices": ["a", "b"], "label": i % 2} for i in range(4)],
        tok,
        options=DataOptions(choices_column="choices"),
    )
    evaluator = Evaluator(mc)
    evaluator.add(logits=np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]))
    assert evaluator.compute() == {"accuracy": 0.75}
