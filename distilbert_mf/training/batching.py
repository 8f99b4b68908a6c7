"""Seeded, length-grouped, shuffled numpy batches — the same batches in the same order in every framework.

The order of an epoch is a function of ``(seed, epoch)`` only:

1. the rows are permuted with ``numpy.random.default_rng([seed, epoch])``;
2. with ``group_by_length``, the permutation is cut into mega-batches of ``megabatch_factor * batch_size`` rows,
   each sorted by length (longest first, ties in permutation order) and cut into batches, so a batch holds rows
   of similar length and little padding;
3. the batches are shuffled (same generator) and the batch holding the longest row is moved to the front, so a
   run that does not fit in memory fails at its first step rather than hours later.

Each batch is padded to its own longest row (optionally rounded up to ``pad_to_multiple_of``). ``batch_size`` is
the *global* batch of one forward/backward pass over all data-parallel ranks: rank ``r`` of ``world_size`` gets
rows ``[r * B / N, (r + 1) * B / N)`` of every batch, padded to the global batch's width (and masked-LM batches are
masked before they are split), so N processes see exactly the batches one process would. A batch index plus the
epoch (:class:`DataPosition`) is the whole resumable state: resuming at a position yields exactly the remaining
batches, with the same masking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from distilbert_mf.training.data import TaskDataset
from distilbert_mf.training.masking import IGNORE_INDEX
from distilbert_mf.training.readers import DataError
from distilbert_mf.training.schedules import TrainingPlan

LAST_BATCH = ("keep", "drop", "fill")


@dataclass(frozen=True)
class DataPosition:
    """Where a run is in its data: ``batch_index`` batches of epoch ``epoch`` are done."""

    epoch: int = 0
    batch_index: int = 0

    def __post_init__(self) -> None:
        for name in ("epoch", "batch_index"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"DataPosition.{name} must be an integer >= 0, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "batch_index": int(self.batch_index)}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> DataPosition:
        return cls(int(data["epoch"]), int(data["batch_index"]))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class BatchLoader:
    """Batches of a :class:`~distilbert_mf.training.data.TaskDataset` as dicts of numpy arrays.

    Args:
        dataset: the tokenized rows.
        batch_size: rows per batch over all data-parallel ranks (``per_device_batch_size * world_size``).
        shuffle: a new order every epoch (training); False keeps the dataset order (evaluation).
        seed: the order (and masked-LM masking) of every epoch derives from it.
        group_by_length: batch rows of similar length together (only with ``shuffle``).
        pad_to_multiple_of: round each batch's width up (8 suits tensor cores and XLA shape caching).
        last_batch: the last, smaller batch: ``"keep"`` it, ``"drop"`` it, or ``"fill"`` it with the epoch's
            first rows (like torch's ``DistributedSampler``, so every batch has ``batch_size`` rows).
        world_size / rank: this process's shard of every batch.
        megabatch_factor: batches per length-sorted mega-batch.

    Raises:
        ValueError: ``batch_size`` not divisible by ``world_size``, a rank outside ``[0, world_size)``, or a kept
            last batch that cannot be split evenly across the ranks.
    """

    def __init__(
        self,
        dataset: TaskDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 42,
        group_by_length: bool = True,
        pad_to_multiple_of: int | None = None,
        last_batch: str = "keep",
        world_size: int = 1,
        rank: int = 0,
        megabatch_factor: int = 50,
    ) -> None:
        if not isinstance(dataset, TaskDataset):
            raise TypeError(f"dataset must be a TaskDataset (prepare_dataset), got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise DataError(f"{dataset.source}: the dataset has no rows")
        self.dataset = dataset
        self.batch_size = _positive_int("batch_size", batch_size)
        self.world_size = _positive_int("world_size", world_size)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be an integer in [0, {self.world_size}), got {rank!r}")
        self.rank = int(rank)
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={self.batch_size} (the global batch) is not divisible by world_size={self.world_size}: "
                f"every rank must get the same number of rows; use a multiple of {self.world_size}"
            )
        if last_batch not in LAST_BATCH:
            raise ValueError(f"last_batch must be one of {LAST_BATCH}, got {last_batch!r}")
        self.last_batch = last_batch
        if pad_to_multiple_of is not None:
            pad_to_multiple_of = _positive_int("pad_to_multiple_of", pad_to_multiple_of)
        self.pad_to_multiple_of = pad_to_multiple_of
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.group_by_length = bool(group_by_length)
        self.megabatch_factor = _positive_int("megabatch_factor", megabatch_factor)
        remainder = len(dataset) % self.batch_size
        if last_batch == "drop" and len(dataset) < self.batch_size:
            raise DataError(
                f"{dataset.source}: {len(dataset)} rows make no full batch of {self.batch_size} with last_batch='drop'"
            )
        if last_batch == "keep" and self.world_size > 1 and remainder % self.world_size:
            raise ValueError(
                f"the last batch has {remainder} rows ({len(dataset)} rows, batch_size={self.batch_size}), which "
                f"cannot be split evenly across world_size={self.world_size} ranks; pass last_batch='fill' or 'drop'"
            )

    @property
    def local_batch_size(self) -> int:
        """Rows of a full batch on this rank."""
        return self.batch_size // self.world_size

    def __len__(self) -> int:
        """Batches per epoch."""
        n, b = len(self.dataset), self.batch_size
        return n // b if self.last_batch == "drop" else math.ceil(n / b)

    def plan(
        self, *, num_train_epochs: float = 3.0, max_steps: int = -1, gradient_accumulation_steps: int = 1
    ) -> TrainingPlan:
        """The :class:`~distilbert_mf.training.schedules.TrainingPlan` of a run over this loader."""
        return TrainingPlan(
            batches_per_epoch=len(self),
            num_train_epochs=num_train_epochs,
            max_steps=max_steps,
            gradient_accumulation_steps=gradient_accumulation_steps,
        )

    def _order(self, epoch: int) -> tuple[np.ndarray, np.random.Generator | None]:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n), None
        rng = np.random.default_rng([self.seed, int(epoch)])
        return rng.permutation(n), rng

    def batch_rows(self, epoch: int = 0) -> list[np.ndarray]:
        """The dataset rows of every (global) batch of ``epoch``, in order."""
        order, rng = self._order(epoch)
        b = self.batch_size
        lengths = self.dataset.lengths
        if rng is not None and self.group_by_length:
            mega = b * self.megabatch_factor
            groups = []
            for start in range(0, len(order), mega):
                block = order[start : start + mega]
                groups.append(block[np.argsort(-lengths[block], kind="stable")])
            order = np.concatenate(groups)
        batches = [order[start : start + b] for start in range(0, len(order), b)]
        if len(batches[-1]) < b:
            if self.last_batch == "drop":
                batches.pop()
            elif self.last_batch == "fill":
                batches[-1] = np.concatenate([batches[-1], order[: b - len(batches[-1])]])
        if rng is not None and self.group_by_length and len(batches) > 1:
            batches = [batches[i] for i in rng.permutation(len(batches))]
            longest = max(range(len(batches)), key=lambda i: (int(lengths[batches[i]].max()), -i))
            batches[0], batches[longest] = batches[longest], batches[0]
        return batches

    def batch_generator(self, epoch: int, batch_index: int) -> np.random.Generator:
        """The generator that masks batch ``batch_index`` of ``epoch`` (masked LM)."""
        return np.random.default_rng([self.seed, int(epoch), int(batch_index), 1])

    def _shard(self, batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        if self.world_size == 1:
            return batch
        per_rank = rows // self.world_size
        lo = self.rank * per_rank
        return {key: value[lo : lo + per_rank] for key, value in batch.items()}

    def make_batch(self, epoch: int, batch_index: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Collate the global batch of ``rows`` and return this rank's shard."""
        batch = self.dataset.collate(
            rows,
            pad_to_multiple_of=self.pad_to_multiple_of,
            rng=self.batch_generator(epoch, batch_index) if self.dataset.task == "masked-lm" else None,
        )
        return self._shard(batch, len(rows))

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """This rank's batches of ``epoch`` from batch ``start`` on."""
        for _, batch in self.epoch_with_rows(epoch, start):
            yield batch

    def epoch_with_rows(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """``(rows, batch)`` pairs: this rank's dataset rows of each batch and the batch."""
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"start must be an integer >= 0, got {start!r}")
        batches = self.batch_rows(epoch)
        for index in range(int(start), len(batches)):
            rows = batches[index]
            per_rank = len(rows) // self.world_size
            yield rows[self.rank * per_rank : (self.rank + 1) * per_rank], self.make_batch(epoch, index, rows)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """The batches of epoch 0 (evaluation loops)."""
        return self.epoch(0)


@dataclass
class Step:
    """One optimizer update: its micro-batches and where it sits in the run.

    Attributes:
        global_step: the update's number once it is done (1 for the first).
        epoch: the epoch it belongs to.
        batch_index: index of its first micro-batch in the epoch.
        batches: ``gradient_accumulation_steps`` micro-batches (fewer for the last step of an epoch).
        epoch_progress: transformers' ``state.epoch`` after this step: ``epoch + batches done / batches_per_epoch``.
        position: the data position after this step (store it in the checkpoint to resume).
    """

    global_step: int
    epoch: int
    batch_index: int
    batches: list[dict[str, np.ndarray]] = field(repr=False)
    epoch_progress: float
    position: DataPosition

    def num_items(self, key: str = "labels") -> int:
        """Targets in this step's micro-batches (this rank): entries of ``key`` that are not -100, or its rows."""
        total = 0
        for batch in self.batches:
            if key not in batch:
                raise KeyError(f"the batches have no {key!r}; they hold {sorted(batch)}")
            values = batch[key]
            total += int(np.count_nonzero(values != IGNORE_INDEX)) if values.dtype.kind == "i" else len(values)
        return total


def iter_steps(
    loader: BatchLoader,
    plan: TrainingPlan,
    *,
    start: DataPosition | None = None,
    global_step: int = 0,
) -> Iterator[Step]:
    """The optimizer steps of a run: ``plan.max_steps - global_step`` of them, from data position ``start``.

    A fresh run starts at ``DataPosition(0, 0)`` with ``global_step=0``; a resumed run passes the position and
    global step stored in its checkpoint and gets exactly the remaining steps, micro-batches included.
    """
    if plan.batches_per_epoch != len(loader):
        raise ValueError(
            f"the plan counts {plan.batches_per_epoch} batches per epoch but the loader has {len(loader)}; build the "
            "plan with loader.plan(...)"
        )
    position = start if start is not None else plan.position_of(global_step)
    if not isinstance(position, DataPosition):
        raise TypeError(f"start must be a DataPosition, got {type(position).__name__}")
    accumulation = plan.gradient_accumulation_steps
    if position.batch_index % accumulation or position.batch_index >= len(loader):
        raise ValueError(
            f"cannot resume at batch {position.batch_index} of epoch {position.epoch}: a step starts at a multiple of "
            f"gradient_accumulation_steps={accumulation} below {len(loader)} batches per epoch"
        )
    step = int(global_step)
    epoch, first = position.epoch, position.batch_index
    while step < plan.max_steps:
        stream = loader.epoch(epoch, first)
        index = first
        while index < len(loader) and step < plan.max_steps:
            count = min(accumulation, len(loader) - index)
            batches = [next(stream) for _ in range(count)]
            step += 1
            done = index + count
            after = DataPosition(epoch + 1, 0) if done == len(loader) else DataPosition(epoch, done)
            yield Step(step, epoch, index, batches, epoch + done / len(loader), after)
            index = done
        epoch, first = epoch + 1, 0


TOKEN_LEVEL_TASKS = ("token-classification", "masked-lm")  # tasks whose labels are (batch, width): widened with -100


def widen_batch(
    batch: Mapping[str, np.ndarray],
    multiple: int | None,
    *,
    pad_token_id: int,
    token_level_labels: bool,
    max_width: int | None = None,
) -> dict[str, np.ndarray]:
    """``batch`` padded on its last (width) axis up to a multiple of ``multiple`` (never past ``max_width``):
    ``input_ids`` with ``pad_token_id``, ``attention_mask`` with 0, per-token ``labels`` with -100; other keys as
    they are. The XLA loops (Keras, Flax) use it to bound the number of compiled batch shapes; padding changes no
    loss or output (padding keys are masked, padding labels ignored)."""
    batch = dict(batch)
    if multiple is None:
        return batch
    width = np.asarray(batch["input_ids"]).shape[-1]
    target = -(-width // multiple) * multiple
    if max_width is not None:
        target = max(width, min(target, int(max_width)))
    if target == width:
        return batch
    fills = {"input_ids": pad_token_id, "attention_mask": 0}
    if token_level_labels:
        fills["labels"] = IGNORE_INDEX
    for key, fill in fills.items():
        if key in batch:
            value = np.asarray(batch[key])
            pad = [(0, 0)] * (value.ndim - 1) + [(0, target - width)]
            batch[key] = np.pad(value, pad, constant_values=fill)
    return batch
