"""Model outputs shared by the three frameworks: same classes, same fields, same order.

An output reads by attribute (``out.logits``), by key (``out["logits"]``) and by index (``out[0]``), like
transformers' ``ModelOutput``. Fields left at ``None`` are absent from keys and indices, so ``out[0]`` is the
loss when labels were given and the logits otherwise. Values are the framework's own tensors.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ModelOutput(dict):
    """An ordered dict whose keys are the non-``None`` fields of ``fields``, in that order."""

    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        data = dict(*args, **kwargs)
        unknown = set(data) - set(self.fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}; fields are {self.fields}")
        super().__init__((name, data[name]) for name in self.fields if data.get(name) is not None)

    def __getattr__(self, name: str) -> Any:
        if name in type(self).fields:
            return self.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}; fields are {type(self).fields}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in type(self).fields:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields are {type(self).fields}")
        self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in type(self).fields:
            raise KeyError(f"{type(self).__name__} has no field {key!r}; fields are {type(self).fields}")
        if value is None:
            self.pop(key, None)
            return
        # keep field order when a field is set late
        items = {**self, key: value}
        super().clear()
        super().update((name, items[name]) for name in self.fields if name in items)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[Any, ...]:
        """The non-``None`` fields, in order."""
        return tuple(self.values())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_short(v)}" for k, v in self.items())
        return f"{type(self).__name__}({inner})"


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"<{type(value).__name__} shape={tuple(shape)}>"
    if isinstance(value, tuple):
        return f"tuple[{len(value)}]"
    return repr(value)


class BaseModelOutput(ModelOutput):
    """``last_hidden_state`` (batch, seq, dim); ``hidden_states``: n_layers + 1 tensors; ``attentions``: n_layers."""

    fields = ("last_hidden_state", "hidden_states", "attentions")


class MaskedLMOutput(ModelOutput):
    """``logits`` (batch, seq, vocab)."""

    fields = ("loss", "logits", "hidden_states", "attentions")


class SequenceClassifierOutput(ModelOutput):
    """``logits`` (batch, num_labels)."""

    fields = ("loss", "logits", "hidden_states", "attentions")


class MultipleChoiceModelOutput(ModelOutput):
    """``logits`` (batch, num_choices)."""

    fields = ("loss", "logits", "hidden_states", "attentions")


class TokenClassifierOutput(ModelOutput):
    """``logits`` (batch, seq, num_labels)."""

    fields = ("loss", "logits", "hidden_states", "attentions")


class QuestionAnsweringModelOutput(ModelOutput):
    """``start_logits`` and ``end_logits`` (batch, seq)."""

    fields = ("loss", "start_logits", "end_logits", "hidden_states", "attentions")
