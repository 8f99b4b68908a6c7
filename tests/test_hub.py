"""Hub resolution without network: a cache folder in huggingface_hub's layout, and a local fake Hub endpoint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import huggingface_hub.constants
import numpy as np
import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.checkpoint import load_pretrained
from distilbert_mf.checkpoint.hub import (
    CheckpointNotFoundError,
    HubUnreachableError,
    NotInCacheError,
    NoWeightsFoundError,
    reset_hub_state,
    resolve_checkpoint,
    resolve_file,
    resolve_files,
)
from distilbert_mf.checkpoint.io import read_weights, write_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def tiny_files(shared_data: Path) -> dict[str, bytes]:
    folder = shared_data / "tiny-random-distilbert"
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors", "vocab.txt")}


def make_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main") -> Path:
    """A cache entry as hf_hub_download leaves it: blobs, snapshot symlinks, refs/<ref> -> commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


@pytest.fixture(autouse=True)
def fresh_hub_state() -> Iterator[None]:
    """Every test starts without a remembered "the Hub could not be reached" verdict."""
    reset_hub_state()
    yield
    reset_hub_state()


# ------------------------------------------------------------------ cache folder, offline


@pytest.fixture
def offline(monkeypatch) -> None:
    """HF_HUB_OFFLINE=1 at call time (tests never depend on the caller's environment or network)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_resolves_from_cache_offline(tmp_path: Path, tiny_files, offline) -> None:
    snapshot = make_cache(tmp_path, "org/tiny", tiny_files)
    folder, fmt, files = resolve_checkpoint("org/tiny", cache_dir=tmp_path)
    assert (folder, fmt, files) == (snapshot, "safetensors", [snapshot / "model.safetensors"])
    assert resolve_checkpoint("org/tiny", cache_dir=tmp_path, revision=COMMIT)[0] == snapshot
    config, arrays, _ = load_pretrained("org/tiny", "base", cache_dir=tmp_path)
    assert config.vocab_size == 1124 and arrays["embeddings.word_embeddings.weight"].shape == (1124, 32)
    assert DistilBertConfig.from_pretrained("org/tiny", cache_dir=tmp_path).dim == 32
    assert resolve_file("org/tiny", "vocab.txt", cache_dir=tmp_path) == snapshot / "vocab.txt"
    assert resolve_file("org/tiny", "tokenizer.json", cache_dir=tmp_path, optional=True) is None


def test_sharded_checkpoint_from_cache(tmp_path: Path, tiny_config, offline) -> None:
    rng = np.random.default_rng(0)
    from distilbert_mf.checkpoint import expected_shapes

    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(tiny_config, "base").items()}
    written = tmp_path / "written"
    write_weights(written, state, "flax_msgpack", head="base", config=tiny_config, max_shard_size="8KB")
    tiny_config.save_pretrained(written)
    cache = tmp_path / "cache"
    snapshot = make_cache(cache, "org/sharded", {p.name: p.read_bytes() for p in written.iterdir()})
    folder, fmt, files = resolve_checkpoint("org/sharded", cache_dir=cache)
    assert (folder, fmt) == (snapshot, "flax_msgpack") and len(files) > 2
    got = read_weights(files, fmt)
    assert all(np.array_equal(got[k], state[k]) for k in state)


def test_offline_and_absent_is_a_clear_error_not_a_hang(tmp_path: Path, offline) -> None:
    start = time.monotonic()
    with pytest.raises(NotInCacheError) as info:
        resolve_checkpoint("org/never-downloaded", cache_dir=tmp_path)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "'org/never-downloaded'" in message and str(tmp_path) in message
    assert "HF_HUB_OFFLINE" in message and "config.json" in message and "local folder" in message
    assert isinstance(info.value, OSError)


def test_local_files_only_names_the_reason(tmp_path: Path, tiny_files, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    make_cache(tmp_path, "org/configonly", {"config.json": tiny_files["config.json"]})
    with pytest.raises(NotInCacheError, match=r"local_files_only=True.*model.safetensors"):
        resolve_checkpoint("org/configonly", cache_dir=tmp_path, local_files_only=True)


def test_not_a_folder_nor_a_repo_id(tmp_path: Path, offline) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"not a local folder.*not a valid Hugging Face Hub repo id"):
        resolve_checkpoint(str(tmp_path / "no" / "such" / "folder"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        resolve_checkpoint(tmp_path / "file.bin")


def test_local_folder_errors(tmp_path: Path, tiny_files) -> None:
    (tmp_path / "config.json").write_bytes(tiny_files["config.json"])
    with pytest.raises(
        NoWeightsFoundError, match=r"model.safetensors, model.safetensors.index.json, pytorch_model.bin"
    ):
        resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match=r"has no tokenizer.json"):
        resolve_file(tmp_path, "tokenizer.json")
    assert resolve_file(tmp_path, "tokenizer.json", optional=True) is None


# ------------------------------------------------------------------ a fake Hub endpoint on 127.0.0.1


class FakeHub:
    """Answers HEAD/GET /{repo_id}/resolve/{revision}/{filename} like the Hub (headers hf_hub_download reads)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, tuple[str, dict[str, bytes]]]] = {}  # repo -> revision -> (commit, files)
        self.requests: list[tuple[str, str]] = []
        self.user_agents: list[str] = []
        self.fail_with: int | None = None  # answer every request with this status (a failing server or proxy)

    def add(self, repo_id: str, files: dict[str, bytes], revision: str = "main", commit: str = COMMIT) -> None:
        self.repos.setdefault(repo_id, {})[revision] = (commit, files)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                hub.user_agents.append(self.headers.get("User-Agent", ""))
                if hub.fail_with is not None:
                    self.send_response(hub.fail_with)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = unquote(self.path.split("?")[0]).lstrip("/")
                repo_id, sep, rest = path.partition("/resolve/")
                revision, _, filename = rest.partition("/")
                status, headers, data = 404, {"X-Error-Code": "RepoNotFound"}, b""
                if sep and repo_id in hub.repos:
                    revisions = hub.repos[repo_id]
                    commit, files = revisions.get(revision) or next(
                        ((c, f) for c, f in revisions.values() if c == revision), (None, None)
                    )
                    if commit is None:
                        headers = {"X-Error-Code": "RevisionNotFound"}
                    elif filename not in files:
                        headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
                    else:
                        data = files[filename]
                        status = 200
                        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body and status == 200:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

        return Handler


@contextlib.contextmanager
def serving(hub: FakeHub, monkeypatch, token: str = "") -> Iterator[FakeHub]:
    """Run ``hub`` on 127.0.0.1 as the HF_ENDPOINT of the test (downloads on, no real token sent)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", token)  # never send a real token to the fake endpoint
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_hub(monkeypatch) -> Iterator[FakeHub]:
    with serving(FakeHub(), monkeypatch) as hub:
        yield hub


def test_downloads_from_endpoint_then_works_offline(tmp_path: Path, fake_hub: FakeHub, tiny_files, monkeypatch) -> None:
    fake_hub.add("org/tiny", tiny_files)
    folder, fmt, files = resolve_checkpoint("org/tiny", cache_dir=tmp_path)
    assert fmt == "safetensors" and folder == tmp_path / "models--org--tiny" / "snapshots" / COMMIT
    assert files[0].read_bytes() == tiny_files["model.safetensors"]
    assert ("HEAD", "/org/tiny/resolve/main/config.json") in fake_hub.requests
    assert (tmp_path / "models--org--tiny" / "refs" / "main").read_text() == COMMIT
    # now offline: the same call is answered from the cache without a single request
    fake_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_checkpoint("org/tiny", cache_dir=tmp_path) == (folder, fmt, files)
    assert fake_hub.requests == []


def test_picks_the_best_format_present(tmp_path: Path, fake_hub: FakeHub, tiny_files, tiny_config) -> None:
    rng = np.random.default_rng(0)
    from distilbert_mf.checkpoint import expected_shapes

    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(tiny_config, "base").items()}
    written = tmp_path / "tf"
    write_weights(written, state, "tf_h5", head="base", config=tiny_config, max_shard_size="10KB")
    tiny_config.save_pretrained(written)
    fake_hub.add("org/tf-only", {p.name: p.read_bytes() for p in written.iterdir()})
    folder, fmt, files = resolve_checkpoint("org/tf-only", cache_dir=tmp_path / "cache")
    assert fmt == "tf_h5" and len(files) > 1 and all(f.parent == folder for f in files)
    asked = [path.rsplit("/", 1)[1] for method, path in fake_hub.requests if method == "HEAD"]
    assert asked[:6] == [
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "tf_model.h5",
    ]
    got = read_weights(files, fmt)
    assert np.array_equal(
        got["distilbert.transformer.layer.1.ffn.lin1.weight"], state["transformer.layer.1.ffn.lin1.weight"]
    )


def test_endpoint_errors(tmp_path: Path, fake_hub: FakeHub, tiny_files) -> None:
    fake_hub.add("org/no-weights", {"config.json": tiny_files["config.json"]})
    with pytest.raises(NoWeightsFoundError, match=r"'org/no-weights'.*has no weights.*flax_model.msgpack.index.json"):
        resolve_checkpoint("org/no-weights", cache_dir=tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="'org/missing' is neither a local folder nor a Hub repo"):
        resolve_checkpoint("org/missing", cache_dir=tmp_path)
    fake_hub.add("org/tiny", tiny_files)
    with pytest.raises(CheckpointNotFoundError, match="revision 'v9' does not exist"):
        resolve_checkpoint("org/tiny", cache_dir=tmp_path, revision="v9")
    with pytest.raises(CheckpointNotFoundError, match=r"has no tokenizer.json"):
        resolve_file("org/tiny", "tokenizer.json", cache_dir=tmp_path)
    assert resolve_file("org/tiny", "tokenizer.json", cache_dir=tmp_path, optional=True) is None


def test_revision_is_honoured(tmp_path: Path, fake_hub: FakeHub, tiny_files) -> None:
    fake_hub.add("org/tiny", tiny_files)
    changed = json.loads(tiny_files["config.json"])
    changed["dropout"] = 0.25
    fake_hub.add(
        "org/tiny", {**tiny_files, "config.json": json.dumps(changed).encode()}, revision="v2", commit=OTHER_COMMIT
    )
    assert DistilBertConfig.from_pretrained("org/tiny", cache_dir=tmp_path).dropout == 0.1
    config = DistilBertConfig.from_pretrained("org/tiny", cache_dir=tmp_path, revision="v2")
    assert config.dropout == 0.25
    folder, _, _ = resolve_checkpoint("org/tiny", cache_dir=tmp_path, revision=OTHER_COMMIT)
    assert folder.name == OTHER_COMMIT


def test_unreachable_hub_falls_back_to_cache(tmp_path: Path, fake_hub: FakeHub, tiny_files, monkeypatch) -> None:
    """With the cache filled, a dead endpoint still resolves (huggingface_hub serves cached files)."""
    fake_hub.add("org/tiny", tiny_files)
    expected = resolve_checkpoint("org/tiny", cache_dir=tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    assert resolve_checkpoint("org/tiny", cache_dir=tmp_path) == expected


# ------------------------------------------------------------------ options: subfolder, use_safetensors, force_download


def test_subfolder_in_a_repo_and_a_folder(tmp_path: Path, fake_hub: FakeHub, tiny_files) -> None:
    fake_hub.add("org/nested", {f"v2/{name}": data for name, data in tiny_files.items()})
    folder, fmt, files = resolve_checkpoint("org/nested", cache_dir=tmp_path, subfolder="v2")
    assert folder.name == "v2" and fmt == "safetensors" and files == [folder / "model.safetensors"]
    assert resolve_file("org/nested", "vocab.txt", cache_dir=tmp_path, subfolder="v2") == folder / "vocab.txt"
    assert DistilBertConfig.from_pretrained(folder).dim == 32
    with pytest.raises(CheckpointNotFoundError, match=r"'org/nested' \(revision main\) has no config.json"):
        resolve_checkpoint("org/nested", cache_dir=tmp_path)
    local = tmp_path / "local"
    (local / "inner").mkdir(parents=True)
    for name, data in tiny_files.items():
        (local / "inner" / name).write_bytes(data)
    assert resolve_checkpoint(local, subfolder="inner")[0] == local / "inner"
    assert resolve_file(local, "vocab.txt", subfolder="inner") == local / "inner" / "vocab.txt"
    with pytest.raises(CheckpointNotFoundError, match="has no subfolder 'missing'"):
        resolve_checkpoint(local, subfolder="missing")
    with pytest.raises(ValueError, match=r"subfolder must be a relative path .* got '\.\./x'"):
        resolve_checkpoint(local, subfolder="../x")


def test_use_safetensors(tmp_path: Path, fake_hub: FakeHub, tiny_files, shared_data: Path) -> None:
    both = {
        **tiny_files,
        "pytorch_model.bin": (shared_data / "tiny-random-distilbert" / "pytorch_model.bin").read_bytes(),
    }
    fake_hub.add("org/both", both)
    fake_hub.add("org/bin-only", {k: v for k, v in both.items() if k != "model.safetensors"})
    assert resolve_checkpoint("org/both", cache_dir=tmp_path, use_safetensors=True)[1] == "safetensors"
    assert resolve_checkpoint("org/both", cache_dir=tmp_path, use_safetensors=False)[1] == "pytorch_bin"
    with pytest.raises(
        NoWeightsFoundError,
        match=r"looked for model.safetensors, model.safetensors.index.json "
        r"\(use_safetensors=True",
    ):
        resolve_checkpoint("org/bin-only", cache_dir=tmp_path, use_safetensors=True)
    local = shared_data / "tiny-random-distilbert"
    assert resolve_checkpoint(local, use_safetensors=False)[1] == "pytorch_bin"
    only_bin = tmp_path / "only-bin"
    only_bin.mkdir()
    (only_bin / "pytorch_model.bin").write_bytes(both["pytorch_model.bin"])
    with pytest.raises(NoWeightsFoundError, match=r"expected one of model.safetensors, model.safetensors.index.json"):
        resolve_checkpoint(only_bin, need_config=False, use_safetensors=True)


def test_force_download_and_user_agent(tmp_path: Path, fake_hub: FakeHub, tiny_files) -> None:
    fake_hub.add("org/tiny", tiny_files)
    resolve_checkpoint("org/tiny", cache_dir=tmp_path, user_agent={"purpose": "test"})
    assert any("purpose/test" in agent and "distilbert_mf" in agent for agent in fake_hub.user_agents)
    weights_get = ("GET", "/org/tiny/resolve/main/model.safetensors")
    resolve_checkpoint("org/tiny", cache_dir=tmp_path)
    assert fake_hub.requests.count(weights_get) == 1  # cached: not downloaded again
    resolve_checkpoint("org/tiny", cache_dir=tmp_path, force_download=True)
    assert fake_hub.requests.count(weights_get) == 2
    with pytest.raises(TypeError, match="force_download must be True or False"):
        resolve_checkpoint("org/tiny", cache_dir=tmp_path, force_download="yes")


# ------------------------------------------------------------------ offline in seconds


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def online(monkeypatch) -> None:
    """Downloads allowed (the test suite sets HF_HUB_OFFLINE=1 by default), no token sent anywhere."""
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.delenv("DISTILBERT_MF_HUB_TIMEOUT", raising=False)
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)


@pytest.fixture
def silent_server(monkeypatch) -> Iterator[list[socket.socket]]:
    """An endpoint that accepts connections and never answers (a hung proxy or server); yields the accepted ones."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    try:
        yield accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


def test_refused_connection_fails_fast_with_the_three_fixes(tmp_path: Path, online, monkeypatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    start = time.monotonic()
    with pytest.raises(HubUnreachableError) as info:
        resolve_checkpoint("org/never-downloaded", cache_dir=tmp_path, revision="v1")
    assert time.monotonic() - start < 5
    err = info.value
    assert isinstance(err, NotInCacheError) and isinstance(err, CheckpointNotFoundError) and isinstance(err, OSError)
    message = str(err)
    first = message.splitlines()[0]
    assert first.startswith(f"could not reach the Hugging Face Hub at {endpoint} (ConnectError")
    assert f"cache at {tmp_path} does not hold 'org/never-downloaded' (revision v1): looked for config.json" in first
    assert "a local folder" in message and "cache_dir= (or HF_HOME)" in message and "HF_HUB_OFFLINE=1" in message
    assert "unset HF_HUB_OFFLINE" not in message  # it was not set
    lookup = err.lookup
    assert (lookup.repo_id, lookup.revision, lookup.files, lookup.endpoint) == (
        "org/never-downloaded",
        "v1",
        ("config.json",),
        endpoint,
    )
    assert lookup.offline_setting is None and "ConnectError" in lookup.reason
    assert "--cache-dir DIR (or HF_HOME=DIR)" in err.cli_message and "cache_dir=" not in err.cli_message
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is HubUnreachableError and again.lookup == lookup and str(again) == message


def test_a_server_that_never_answers_times_out(tmp_path: Path, online, silent_server) -> None:
    """The default deadline (3 s) keeps the whole failure under 5 s."""
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"\(.*3 s; DISTILBERT_MF_HUB_TIMEOUT sets how long to wait\)"):
        resolve_file("org/hung", "config.json", cache_dir=tmp_path)
    elapsed = time.monotonic() - start
    assert 2.5 < elapsed < 5 and len(silent_server) == 1


def test_the_first_failure_is_remembered(tmp_path: Path, online, silent_server, monkeypatch) -> None:
    monkeypatch.setenv("DISTILBERT_MF_HUB_TIMEOUT", "0.5")
    with pytest.raises(HubUnreachableError):
        DistilBertConfig.from_pretrained("org/first", cache_dir=tmp_path)
    start = time.monotonic()
    for call in (
        lambda: resolve_checkpoint("org/second", cache_dir=tmp_path),
        lambda: resolve_file("org/third", "vocab.txt", cache_dir=tmp_path, optional=True),
        lambda: load_pretrained("org/fourth", "base", cache_dir=tmp_path),
    ):
        with pytest.raises(HubUnreachableError):
            call()
    assert time.monotonic() - start < 0.5 and len(silent_server) == 1  # no new connection
    reset_hub_state()
    with pytest.raises(HubUnreachableError):
        resolve_file("org/first", "config.json", cache_dir=tmp_path)
    assert len(silent_server) == 2
    monkeypatch.setenv("DISTILBERT_MF_HUB_TIMEOUT", "soon")
    reset_hub_state()
    with pytest.raises(ValueError, match="DISTILBERT_MF_HUB_TIMEOUT='soon' is not a positive number of seconds"):
        resolve_file("org/first", "config.json", cache_dir=tmp_path)


def test_cached_files_still_load_when_unreachable(tmp_path: Path, tiny_files, online, monkeypatch) -> None:
    snapshot = make_cache(tmp_path, "org/tiny", tiny_files)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert resolve_checkpoint("org/tiny", cache_dir=tmp_path) == (
        snapshot,
        "safetensors",
        [snapshot / "model.safetensors"],
    )
    # optional files of a cached repo are absent, not an error; the repo is not cached: an error naming every file
    found = resolve_files("org/tiny", ["vocab.txt", "tokenizer.json"], cache_dir=tmp_path, optional=True)
    assert found == {"vocab.txt": snapshot / "vocab.txt", "tokenizer.json": None}
    with pytest.raises(HubUnreachableError, match=r"looked for vocab.txt, tokenizer.json\."):
        resolve_files("org/other", ["vocab.txt", "tokenizer.json"], cache_dir=tmp_path, optional=True)
    with pytest.raises(HubUnreachableError, match=r"cannot be downloaded again as force_download asks"):
        resolve_checkpoint("org/tiny", cache_dir=tmp_path, force_download=True)


def test_a_failing_server_counts_as_unreachable(tmp_path: Path, fake_hub: FakeHub) -> None:
    fake_hub.fail_with = 503
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"\(HTTP 503 from http://127\.0\.0\.1:\d+\)"):
        resolve_checkpoint("org/tiny", cache_dir=tmp_path)
    assert time.monotonic() - start < 5
    assert [method for method, _ in fake_hub.requests] == ["GET"]  # one question, no retries, no HEAD


def test_offline_settings_are_named_not_blamed_on_the_network(tmp_path: Path, online, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(NotInCacheError) as info:
        resolve_checkpoint("org/absent", cache_dir=tmp_path, local_files_only=True)
    err = info.value
    assert type(err) is NotInCacheError and err.lookup.offline_setting == "local_files_only=True"
    assert str(err).startswith("downloads are disabled (local_files_only=True), and the Hugging Face cache at")
    assert "could not reach" not in str(err) and "pass local_files_only=False" in str(err)
    assert "downloads are disabled (--local-files-only)" in err.cli_message
    assert "leave out --local-files-only" in err.cli_message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotInCacheError) as info:
        resolve_file("org/absent", "vocab.txt", cache_dir=tmp_path, optional=True)
    assert type(info.value) is NotInCacheError
    assert "downloads are disabled (HF_HUB_OFFLINE=1)" in str(info.value) and "unset HF_HUB_OFFLINE" in str(info.value)


def test_config_and_tokenizers_fail_fast_when_unreachable(tmp_path: Path, online, monkeypatch) -> None:
    """What a user calls first, with no network and an empty cache: one clear error each, all within 5 s."""
    from distilbert_mf.tokenization import DistilBertTokenizer, DistilBertTokenizerFast

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    for load in (
        DistilBertConfig.from_pretrained,
        DistilBertTokenizerFast.from_pretrained,
        DistilBertTokenizer.from_pretrained,
    ):
        with pytest.raises(HubUnreachableError, match=r"'distilbert-base-uncased' \(revision main\): looked for"):
            load("distilbert-base-uncased")
    assert time.monotonic() - start < 5
