"""The ``distilbert-mf`` command line: ``run`` end to end through a subprocess, errors, help, ``env``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from distilbert_mf import cli

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data):
    """Tiny random PyTorch checkpoints (classifier, question answering, masked LM) with the tiny tokenizer."""
    torch = pytest.importorskip("torch")
    from distilbert_mf import DistilBertConfig
    from distilbert_mf.torch import (
        DistilBertForMaskedLM,
        DistilBertForQuestionAnswering,
        DistilBertForSequenceClassification,
    )

    base = DistilBertConfig(vocab_size=1124, dim=32, n_heads=4, hidden_dim=37, n_layers=2, initializer_range=0.2)
    nli = {0: "contradiction", 1: "neutral", 2: "entailment"}
    specs = {
        "cls": (DistilBertForSequenceClassification, base.replace(id2label=nli)),
        "qa": (DistilBertForQuestionAnswering, base),
        "mlm": (DistilBertForMaskedLM, base),
    }
    root = tmp_path_factory.mktemp("cli-models")
    folders = {}
    for seed, (name, (cls, config)) in enumerate(specs.items()):
        torch.manual_seed(seed)
        cls(config).save_pretrained(root / name)
        for file in TOKENIZER_FILES:
            shutil.copy(shared_data / "tiny-random-distilbert" / file, root / name / file)
        folders[name] = root / name
    return folders


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "distilbert_mf.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines()]


# -- end to end ---------------------------------------------------------------------------------------------------
@pytest.mark.torch
def test_run_text_classification_through_stdin(models):
    from distilbert_mf import pipeline

    lines = ["I love this movie!", "", "terrible, boring and far too long", '{"text": "a", "text_pair": "b"}']
    done = run_cli(
        "run",
        "--task",
        "sentiment-analysis",
        "--model",
        str(models["cls"]),
        "--framework",
        "pt",
        stdin="\n".join(lines) + "\n",
    )
    assert done.returncode == 0, done.stderr
    results = json_lines(done.stdout)  # every stdout line is JSON: logs go to stderr
    expected = pipeline("text-classification", str(models["cls"]), framework="pt")
    assert len(results) == 3  # the blank line is skipped
    for got, line in zip(results, [lines[0], lines[2], json.loads(lines[3])]):
        want = expected(line)
        assert type(got) is type(want)  # a list for a text, a dict for a pair, as pipeline() returns
        got, want = (got, want) if isinstance(got, dict) else (got[0], want[0])
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-6)
    assert isinstance(results[0], list) and set(results[0][0]) == {"label", "score"}


@pytest.mark.torch
def test_run_question_answering_and_parameters(models):
    lines = [
        {"question": "Who lives here?", "context": "John lives in New York."},
        {"question": "Where?", "context": "He works at Microsoft in Redmond."},
    ]
    done = run_cli(
        "run",
        "--task",
        "question-answering",
        "--model",
        str(models["qa"]),
        "--top-k",
        "2",
        "--param",
        "max_answer_len=3",
        "--batch-size",
        "1",
        stdin="\n".join(json.dumps(line) for line in lines),
    )
    assert done.returncode == 0, done.stderr
    results = json_lines(done.stdout)
    assert len(results) == 2 and all(len(r) == 2 for r in results)
    for line, answers in zip(lines, results):
        for answer in answers:
            assert line["context"][answer["start"] : answer["end"]] == answer["answer"]


@pytest.mark.torch
def test_run_fill_mask_files_and_zero_shot(models, tmp_path):
    source, target = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("hello [MASK] world\nthe [MASK] is [MASK]\n", encoding="utf-8")
    done = run_cli(
        "run",
        "--task",
        "fill-mask",
        "--model",
        str(models["mlm"]),
        "--input",
        str(source),
        "--output",
        str(target),
        "--top-k",
        "3",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    single, double = json_lines(target.read_text(encoding="utf-8"))
    assert len(single) == 3 and {"score", "token", "token_str", "sequence"} == set(single[0])
    assert len(double) == 2 and len(double[0]) == 3  # one list per mask

    lines = [
        {"sequences": "the match ended in a draw", "candidate_labels": ["sports", "politics"]},
        {"sequences": "the vote was close", "candidate_labels": ["weather", "politics", "food"], "multi_label": True},
        {"sequences": "a third one", "candidate_labels": ["sports", "politics"]},
    ]
    done = run_cli(
        "run",
        "--task",
        "zero-shot-classification",
        "--model",
        str(models["cls"]),
        stdin="\n".join(json.dumps(line) for line in lines),
    )
    assert done.returncode == 0, done.stderr
    results = json_lines(done.stdout)
    assert [r["sequence"] for r in results] == [line["sequences"] for line in lines]  # order kept across groups
    assert sorted(results[1]["labels"]) == sorted(lines[1]["candidate_labels"])
    assert sum(results[0]["scores"]) == pytest.approx(1.0)


# -- errors (in process: fast) -----------------------------------------------------------------------------------
def call_main(args, capsys, monkeypatch, stdin=""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_task(capsys, monkeypatch):
    code, out, err = call_main(["run", "--task", "summarization"], capsys, monkeypatch, "text\n")
    assert code == 2 and out == ""
    assert "unknown task 'summarization'" in err and "text-classification" in err


def test_missing_model_folder(capsys, monkeypatch, tmp_path):
    missing = str(tmp_path / "nope")
    code, _, err = call_main(["run", "--task", "fill-mask", "--model", missing], capsys, monkeypatch, "a [MASK]\n")
    assert code == 2 and f"model folder {missing!r} does not exist" in err


def test_task_without_model(capsys, monkeypatch):
    """question-answering's default is a Hub model: offline and not cached, the Hub error, naming CLI flags."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = call_main(
        ["run", "--task", "question-answering"], capsys, monkeypatch, '{"question": "q", "context": "c"}'
    )
    assert code == 2 and "'distilbert/distilbert-base-cased-distilled-squad'" in err
    assert "--cache-dir DIR" in err and "cache_dir=" not in err and "model=" not in err
    code, _, err = call_main(["run", "--task", "ner"], capsys, monkeypatch, "x\n")
    assert code == 2 and "has no default model" in err and "pass --model <folder" in err and "model=" not in err


def test_default_text_classification_model_missing(capsys, monkeypatch):
    from distilbert_mf import models

    monkeypatch.setattr(models, "BUILTIN", {})
    code, _, err = call_main(["run", "--task", "text-classification"], capsys, monkeypatch, "great\n")
    assert code == 2 and "distilbert-mf/minilm-sst2" in err and "pass --model <folder" in err and "model=" not in err


def test_unreadable_input(capsys, monkeypatch, tmp_path):
    code, _, err = call_main(
        ["run", "--task", "fill-mask", "--input", str(tmp_path / "absent.txt")], capsys, monkeypatch
    )
    assert code == 2 and "cannot read input" in err and "absent.txt" in err
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ok\n\xff\xfe\n")
    code, _, err = call_main(["run", "--task", "fill-mask", "--input", str(binary)], capsys, monkeypatch)
    assert code == 2 and "cannot read input" in err


@pytest.mark.parametrize(
    ("task", "stdin", "message"),
    [
        (
            "question-answering",
            '{"question": "q", "context": "c"}\n{"question": "q", "context": \n',
            "line 2: invalid JSON",
        ),
        ("question-answering", '{"question": "q", "context": "c"}\nplain text\n', "line 2: question-answering takes"),
        ("question-answering", '\n\n{"question": "q"}\n', "line 3: the JSON object lacks ['context']"),
        ("text-classification", '["a", "b"]\n{"text": 1\n', "line 2: invalid JSON"),
        ("zero-shot-classification", "no labels given\n", "line 1: no candidate_labels"),
        ("fill-mask", '{"txt": "x"}\n', "line 1: the JSON object lacks ['text']"),
    ],
)
def test_bad_input_lines_name_the_line(task, stdin, message, capsys, monkeypatch, tmp_path):
    code, out, err = call_main(["run", "--task", task, "--model", str(tmp_path)], capsys, monkeypatch, stdin)
    assert code == 2 and out == ""
    assert message in err


def test_parameter_the_task_lacks(capsys, monkeypatch, tmp_path):
    code, _, err = call_main(
        ["run", "--task", "ner", "--top-k", "2", "--model", str(tmp_path)], capsys, monkeypatch, "x\n"
    )
    assert code == 2 and "unexpected keyword argument(s) ['top_k']" in err and "--top-k sets top_k" in err


def test_bad_params_are_usage_errors(capsys, monkeypatch):
    code, _, err = call_main(["run", "--task", "ner", "--param", "stride"], capsys, monkeypatch, "x\n")
    assert code == 2 and "--param expects KEY=VALUE" in err
    assert cli._parse_params(["a=1", "b=simple", 'c=["O"]', "d=null"]) == {"a": 1, "b": "simple", "c": ["O"], "d": None}


# -- help, registry, env ------------------------------------------------------------------------------------------
def test_help_lists_commands_and_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "run" in text and "env" in text
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--task",
        "--model",
        "--framework",
        "--input",
        "--output",
        "--batch-size",
        "--device",
        "--top-k",
        "--param",
        "question-answering",
        "zero-shot-classification",
        "candidate_labels",
    ):
        assert option in text
    with pytest.raises(SystemExit):
        cli.main(["env", "--help"])
    assert "--json" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: distilbert-mf" in capsys.readouterr().err


def test_registering_a_command(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))

    def add_arguments(parser):
        parser.add_argument("name")

    def hello(args):
        sys.stdout.write(f"hello {args.name}\n")
        return 0

    cli.register(cli.Command("hello", "say hello", add_arguments, hello))
    assert cli.main(["hello", "you"]) == 0
    assert capsys.readouterr().out == "hello you\n"
    with pytest.raises(ValueError, match="already registered"):
        cli.register(cli.Command("hello", "again", add_arguments, hello))


def test_env_versions_without_imports(capsys, monkeypatch):
    real_version = cli.metadata.version

    def fake_version(name):
        if name == "tensorflow":
            raise cli.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(cli.metadata, "version", fake_version)
    modules_before = set(sys.modules)
    assert cli.main(["env", "--json", "--no-devices"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["distilbert_mf"] and info["numpy"] and info["python"]
    assert info["tensorflow"] == "not installed"
    assert not {"torch", "tensorflow", "jax"} & (set(sys.modules) - modules_before)


def test_env_devices_subprocess():
    done = run_cli("env", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    for framework in ("torch", "tensorflow", "flax"):
        devices = info[f"{framework} devices"]
        installed = info[framework] != "not installed"
        assert (isinstance(devices, list) and devices) if installed else devices == "not installed"
