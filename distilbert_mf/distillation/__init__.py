"""Knowledge distillation the DistilBERT way: the framework-neutral parts (numpy only).

- :mod:`.masking`: corpus token counts -> masking probabilities ``max(count, 1) ** -0.7`` -> the seeded per-batch
  masking (:class:`FrequencyMasker`, a masker for the training data layer);
- :mod:`.student`: a student from chosen layers of a DistilBERT or BERT teacher (:func:`init_student`);
- :mod:`.options`: the loss weights (:class:`DistillationWeights`) and the checks run before training;
- :mod:`.losses`: the rules of the losses (outputs, shapes, options) shared by the three frameworks' math in
  ``distilbert_mf.{torch,tensorflow,flax}.distillation`` (``distillation_loss`` and the task variants).

Usage::

    from distilbert_mf.distillation import DistillationWeights, FrequencyMasker, init_student_from_pretrained
    from distilbert_mf.training import BatchLoader, DataOptions, prepare_dataset

    corpus = prepare_dataset("masked-lm", "corpus.txt", tok, config=teacher_config)
    corpus = corpus.with_masker(FrequencyMasker.from_corpus(corpus, tok))
    student = init_student_from_pretrained(teacher_dir)          # layers [0, 2, 4, 7, 9, 11] of a 12-layer teacher
    student.save_pretrained(student_dir)                          # then any framework's from_pretrained
    weights = DistillationWeights()                               # T 2.0, alpha_ce 5.0, alpha_mlm 2.0, alpha_cos 1.0
    for batch in BatchLoader(corpus, batch_size=32, seed=0).epoch(0):  # input_ids masked, labels -100 elsewhere
        ...  # distilbert_mf.torch.distillation.distillation_loss(student_out, teacher_out,
        #        attention_mask=batch["attention_mask"], labels=batch["labels"], **weights.as_kwargs())
"""

from __future__ import annotations

from distilbert_mf.distillation.masking import FrequencyMasker, mask_batch, masking_probabilities, token_counts
from distilbert_mf.distillation.options import (
    DistillationWeights,
    TaskDistillationWeights,
    check_hidden_sizes,
    check_masked_lm_teacher,
    check_vocabularies,
)
from distilbert_mf.distillation.student import (
    DISTILBERT_LAYERS,
    LAYER_STRATEGIES,
    Student,
    init_student,
    init_student_from_pretrained,
    resolve_layers,
    student_layers,
)

__all__ = [
    "DISTILBERT_LAYERS",
    "LAYER_STRATEGIES",
    "DistillationWeights",
    "FrequencyMasker",
    "Student",
    "TaskDistillationWeights",
    "check_hidden_sizes",
    "check_masked_lm_teacher",
    "check_vocabularies",
    "init_student",
    "init_student_from_pretrained",
    "mask_batch",
    "masking_probabilities",
    "resolve_layers",
    "student_layers",
    "token_counts",
]
