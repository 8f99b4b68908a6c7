"""Read training data into records: TSV, CSV, JSON Lines, JSON (SQuAD or a list of objects), CoNLL, plain text.

Every reader returns :class:`Records`: one ``dict`` per example plus, for each, where it came from
(``"dev.tsv line 12"``), so that every later error (a missing column, a label never seen in training, an answer
outside its context) names the file and line. A ``datasets.Dataset`` (duck-typed: ``column_names`` and
iteration over dicts), a list of dicts or a dict of columns is accepted too; ``datasets`` is not a dependency.

Formats (``format=`` or from the file name):

=========  ===============================================================================================
``tsv``    header line, tab-separated, no quoting (the GLUE convention: quotes are part of the text)
``csv``    header line, comma-separated, standard CSV quoting
``jsonl``  one JSON object per line (``.jsonl`` / ``.ndjson``)
``json``   SQuAD layout ``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`` (one record per
           question: ``id, title, context, question, answers={"text": [...], "answer_start": [...]}``), or a
           list of objects, or ``{"data": [objects]}``
``conll``  one token per line, whitespace-separated columns (4 columns: ``token POS chunk NER``), a blank line
           between sentences, ``-DOCSTART-`` lines skipped; one record per sentence with ``tokens`` and
           ``ner_tags`` (the last column), plus ``pos_tags`` / ``chunk_tags`` for 4 columns
``text``   one document per line (blank lines skipped): ``{"text": line}``
=========  ===============================================================================================

``.txt`` is CoNLL for token classification and text for masked LM (pass ``format=`` otherwise).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("tsv", "csv", "jsonl", "json", "conll", "text")
_SUFFIXES = {
    ".tsv": "tsv",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".conll": "conll",
    ".iob": "conll",
    ".iob2": "conll",
}
_TXT_FORMAT_OF_TASK = {
    "token-classification": "conll",
    "ner": "conll",
    "masked-lm": "text",
    "mlm": "text",
    "fill-mask": "text",
}
_CONLL_4_COLUMNS = ("tokens", "pos_tags", "chunk_tags", "ner_tags")


class DataError(ValueError):
    """Training data that cannot be used as given; the message names the file, line and column."""


@dataclass
class Records:
    """Examples as dicts, with where each came from.

    Attributes:
        rows: one dict per example.
        locations: ``rows[i]`` came from ``locations[i]`` (``"train.tsv line 3"``).
        source: the file (or ``"<datasets.Dataset>"``) the rows came from.
        columns: the column names (a TSV header, the union of the JSON keys).
        features: the ``datasets`` features when read from a ``datasets.Dataset`` (``ClassLabel`` names).
    """

    rows: list[dict[str, Any]]
    locations: list[str]
    source: str
    columns: tuple[str, ...]
    features: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def require(self, *names: str, what: str = "column") -> None:
        """Raise :class:`DataError` naming the file when one of ``names`` is not a column."""
        for name in names:
            if name not in self.columns:
                raise DataError(
                    f"{self.source}: no {what} {name!r}; the columns are {list(self.columns)} "
                    f"(choose another with the column options)"
                )

    def value(self, index: int, name: str) -> Any:
        """``rows[index][name]``; a row without it is an error naming its location."""
        row = self.rows[index]
        if name not in row:
            raise DataError(f"{self.locations[index]}: no column {name!r} in this row (it has {sorted(row)})")
        return row[name]

    def label_names_of(self, name: str) -> list[str] | None:
        """Class names a ``datasets`` ``ClassLabel`` column (or a sequence of them) declares, else None."""
        if self.features is None:
            return None
        feature = _get(self.features, name)
        for candidate in (feature, getattr(feature, "feature", None)):
            names = getattr(candidate, "names", None)
            if isinstance(names, (list, tuple)) and names:
                return [str(n) for n in names]
        return None


def _get(mapping: Any, key: str) -> Any:
    try:
        return mapping[key]
    except (KeyError, TypeError, IndexError):
        return None


def infer_format(path: str | os.PathLike[str], task: str | None = None) -> str:
    """The format of ``path`` from its suffix (``.txt`` by ``task``); raises :class:`DataError` when unknown."""
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix == ".txt" and task in _TXT_FORMAT_OF_TASK:
        return _TXT_FORMAT_OF_TASK[task]
    raise DataError(
        f"cannot tell the format of {path} from its name (suffix {suffix!r}); pass format= one of {FORMATS} "
        f"(known suffixes: {sorted(_SUFFIXES)}, and .txt for token classification / masked LM)"
    )


def read_text_file(path: str | os.PathLike[str]) -> str:
    """The text of ``path``: UTF-8 (a BOM is dropped); an empty or non-UTF-8 file is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path} line {line} column {column}: byte 0x{data[err.start]:02x} is not UTF-8 ({err.reason}); "
            "save the file as UTF-8"
        ) from None


def read_records(source: Any, *, format: str | None = None, task: str | None = None) -> Records:
    """Read ``source`` (a path, a ``datasets.Dataset``, a list of dicts, a dict of columns, or :class:`Records`).

    Args:
        source: what to read.
        format: one of :data:`FORMATS`; inferred from a path's suffix when None.
        task: the task the records are for; decides what ``.txt`` means.

    Raises:
        DataError: an empty, non-UTF-8 or malformed file, naming the file and line.
        FileNotFoundError: ``source`` is a path that does not exist.
    """
    if isinstance(source, Records):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        fmt = format or infer_format(path, task)
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        text = read_text_file(path)
        return _READERS[fmt](text, str(path))
    if format is not None:
        raise TypeError(f"format= applies to files only; got a {type(source).__name__}")
    if isinstance(source, Mapping):
        return _from_columns(source)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return _from_rows(source, "<list>")
    if hasattr(source, "column_names") and hasattr(source, "__iter__"):
        return _from_dataset(source)
    raise TypeError(
        "training data must be a file path, a datasets.Dataset, a list of dicts or a dict of columns; "
        f"got {type(source).__name__}"
    )


def _from_rows(rows: Sequence[Any], source: str, prefix: str = "row") -> Records:
    out, columns = [], {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"{source} {prefix} {i}: expected an object/dict, got {type(row).__name__}")
        out.append(dict(row))
        columns.update(dict.fromkeys(row))
    if not out:
        raise DataError(f"{source} holds no examples")
    return Records(out, [f"{source} {prefix} {i}" for i in range(len(out))], source, tuple(columns))


def _from_columns(data: Mapping[str, Any]) -> Records:
    lengths = {name: len(values) for name, values in data.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"the columns have different lengths: {lengths}")
    n = next(iter(lengths.values()), 0)
    rows = [{name: values[i] for name, values in data.items()} for i in range(n)]
    return _from_rows(rows, "<dict>")


def _from_dataset(dataset: Any) -> Records:
    records = _from_rows([dict(row) for row in dataset], "<datasets.Dataset>")
    records.columns = tuple(dataset.column_names)
    records.features = getattr(dataset, "features", None)
    return records


def _read_delimited(text: str, source: str, delimiter: str) -> Records:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header: list[str] | None = None
    rows, locations = [], []
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                duplicates = sorted({h for h in header if header.count(h) > 1})
                if duplicates or "" in header:
                    raise DataError(
                        f"{source} line {reader.line_num}: the header must name every column once; got {header}"
                    )
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"{source} line {reader.line_num}: {len(fields)} fields but the header has {len(header)} "
                    f"columns {header}"
                )
            rows.append(dict(zip(header, fields)))
            locations.append(f"{source} line {reader.line_num}")
    except csv.Error as err:
        raise DataError(f"{source} line {reader.line_num}: {err}") from None
    if header is None:
        raise DataError(f"{source} is empty")
    if not rows:
        raise DataError(f"{source} has a header {header} but no rows")
    return Records(rows, locations, source, tuple(header))


def _read_tsv(text: str, source: str) -> Records:
    return _read_delimited(text, source, "\t")


def _read_csv(text: str, source: str) -> Records:
    return _read_delimited(text, source, ",")


def _read_jsonl(text: str, source: str) -> Records:
    rows, locations, columns = [], [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{source} line {number} column {err.colno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{source} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        locations.append(f"{source} line {number}")
        columns.update(dict.fromkeys(row))
    return Records(rows, locations, source, tuple(columns))


def _read_json(text: str, source: str) -> Records:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{source} line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        items = data["data"]
        if items and all(isinstance(a, dict) and "paragraphs" in a for a in items):
            return _flatten_squad(items, source)
        return _from_rows(items, source, "data item")
    if isinstance(data, list):
        return _from_rows(data, source, "item")
    raise DataError(
        f"{source}: expected SQuAD JSON ({{'data': [{{'paragraphs': ...}}]}}), a list of objects or "
        f"{{'data': [objects]}}; got a top-level {type(data).__name__}"
        + (f" with keys {sorted(data)}" if isinstance(data, dict) else "")
    )


def _flatten_squad(articles: list[dict[str, Any]], source: str) -> Records:
    rows, locations = [], []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs") or ()):
            where = f"{source} article {a} paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise DataError(f"{where}: a SQuAD paragraph needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(paragraph.get("qas") or ()):
                if not isinstance(qa, dict) or "question" not in qa:
                    raise DataError(f"{where} question {q}: a SQuAD question needs 'question' and 'answers'")
                answers = qa.get("answers") or []
                try:
                    texts = [str(ans["text"]) for ans in answers]
                    starts = [int(ans["answer_start"]) for ans in answers]
                except (KeyError, TypeError, ValueError):
                    raise DataError(
                        f"{where} question {q}: each answer needs 'text' and an integer 'answer_start', got {answers!r}"
                    ) from None
                row = {
                    "id": str(qa.get("id", f"{a}-{p}-{q}")),
                    "title": article.get("title", ""),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": texts, "answer_start": starts},
                }
                if "is_impossible" in qa:
                    row["is_impossible"] = bool(qa["is_impossible"])
                rows.append(row)
                locations.append(f"{where} question {q} (id {row['id']})")
    if not rows:
        raise DataError(f"{source} holds no SQuAD questions")
    columns = ("id", "title", "context", "question", "answers")
    if any("is_impossible" in row for row in rows):
        columns += ("is_impossible",)
    return Records(rows, locations, source, columns)


def _conll_names(n_columns: int) -> tuple[str, ...]:
    if n_columns == 4:
        return _CONLL_4_COLUMNS
    if n_columns == 2:
        return ("tokens", "ner_tags")
    return ("tokens", *(f"tag_{i}" for i in range(1, n_columns - 1)), "ner_tags")


def _read_conll(text: str, source: str) -> Records:
    rows, locations = [], []
    n_columns: int | None = None
    sentence: list[list[str]] = []
    first_line = 0

    def close() -> None:
        if sentence:
            names = _conll_names(n_columns or 0)
            rows.append({name: [fields[i] for fields in sentence] for i, name in enumerate(names)})
            locations.append(f"{source} line {first_line}")
            sentence.clear()

    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            close()
            continue
        if fields[0] == "-DOCSTART-":
            close()
            continue
        if n_columns is None:
            if len(fields) < 2:
                raise DataError(
                    f"{source} line {number}: a CoNLL line is 'token ... tag' (at least 2 columns), got {line!r}"
                )
            n_columns = len(fields)
        if len(fields) != n_columns:
            raise DataError(
                f"{source} line {number}: {len(fields)} columns but the file's lines have {n_columns} "
                f"({' '.join(_conll_names(n_columns))}); got {line!r}"
            )
        if not sentence:
            first_line = number
        sentence.append(fields)
    close()
    if not rows:
        raise DataError(f"{source} holds no sentences")
    return Records(rows, locations, source, _conll_names(n_columns or 0))


def _read_text(text: str, source: str) -> Records:
    rows, locations = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            rows.append({"text": line})
            locations.append(f"{source} line {number}")
    return Records(rows, locations, source, ("text",))


_READERS = {
    "tsv": _read_tsv,
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "json": _read_json,
    "conll": _read_conll,
    "text": _read_text,
}


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[tuple[int, Sequence[Any]]]:
    """``(start, items[start:start + size])`` for consecutive chunks (tokenizing in chunks bounds memory)."""
    for start in range(0, len(items), size):
        yield start, items[start : start + size]
