"""push_to_hub / save_pretrained(push_to_hub=True) against a local fake Hub on 127.0.0.1 (never the network):
the files committed are the files save_pretrained writes, and the repo then loads back through from_pretrained."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_hub import COMMIT, FakeHub, serving

from distilbert_mf import DistilBertConfig
from distilbert_mf.checkpoint.upload import HubUploadError, upload_folder
from distilbert_mf.hub import reset_hub_state

TINY = DistilBertConfig(vocab_size=40, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=24)


class UploadingHub(FakeHub):
    """The download side of FakeHub plus the three requests an upload makes: create repo, preupload, commit."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[dict] = []
        self.refuse_with: int | None = None

    def handler(self):
        hub = self
        base = super().handler()

        class Handler(base):
            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.requests.append(("POST", self.path))
                if hub.refuse_with:
                    return self._json(hub.refuse_with, {"error": "refused"})
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    request = json.loads(body)
                    name = (
                        request["name"]
                        if not request.get("organization")
                        else f"{request['organization']}/{request['name']}"
                    )
                    return self._json(200, {"url": f"http://{self.headers['Host']}/{name}", "name": name})
                repo_id, _, rest = path.removeprefix("/api/models/").partition("/")
                repo_id = (
                    repo_id + "/" + rest.split("/")[0] if rest.split("/")[1] in ("preupload", "commit") else repo_id
                )
                action = "preupload" if "/preupload/" in path else "commit" if "/commit/" in path else None
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                if action == "commit":
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    files = {
                        line["value"]["path"]: base64.b64decode(line["value"]["content"])
                        for line in lines
                        if line["key"] == "file"
                    }
                    header = next(line["value"] for line in lines if line["key"] == "header")
                    hub.commits.append({"repo_id": repo_id, "files": files, "summary": header["summary"]})
                    hub.add(repo_id, files)
                    return self._json(
                        200,
                        {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{COMMIT}", "commitOid": COMMIT},
                    )
                return self._json(404, {"error": f"no route {path}"})

        return Handler


@pytest.fixture
def upload_hub(monkeypatch) -> Iterator[UploadingHub]:
    reset_hub_state()
    try:
        with serving(UploadingHub(), monkeypatch, token="hf_fake_token_for_the_local_server") as hub:
            yield hub
    finally:
        reset_hub_state()


def _model(framework: str, head: str = "sequence_classification"):
    if framework == "pt":
        pytest.importorskip("torch")
        from distilbert_mf.torch import DistilBertForSequenceClassification as cls
    elif framework == "tf":
        pytest.importorskip("keras")
        from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification as cls
    else:
        pytest.importorskip("flax")
        from distilbert_mf.flax import FlaxDistilBertForSequenceClassification as cls
    return cls(TINY)


@pytest.mark.parametrize("framework", ["pt", "tf", "flax"])
def test_push_to_hub_commits_the_saved_files_and_loads_back(framework, upload_hub, tmp_path: Path) -> None:
    model = _model(framework)
    url = model.push_to_hub("me/tiny-sst", commit_message="first")
    assert url.endswith(f"/commit/{COMMIT}")
    (commit,) = upload_hub.commits
    assert commit["repo_id"] == "me/tiny-sst" and commit["summary"] == "first"
    assert sorted(commit["files"]) == ["config.json", "model.safetensors"]
    model.save_pretrained(tmp_path / "local")
    assert commit["files"]["model.safetensors"] == (tmp_path / "local" / "model.safetensors").read_bytes()
    back = type(model).from_pretrained("me/tiny-sst", cache_dir=tmp_path / "cache")
    for key, value in model.canonical_state_dict().items():
        np.testing.assert_array_equal(back.canonical_state_dict()[key], value)


def test_save_pretrained_push_to_hub(upload_hub, tmp_path: Path) -> None:
    model = _model("pt")
    model.save_pretrained(tmp_path / "tiny", push_to_hub=True, repo_id="me/tiny", safe_serialization=False)
    (commit,) = upload_hub.commits
    assert commit["repo_id"] == "me/tiny" and "pytorch_model.bin" in commit["files"]
    with pytest.raises(TypeError, match="only apply with push_to_hub=True"):
        model.save_pretrained(tmp_path / "again", repo_id="me/tiny")


def test_upload_errors_are_clear(upload_hub, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"holds no config\.json"):
        upload_folder(tmp_path, "me/empty")
    _model("pt").save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="not a Hub repo id"):
        upload_folder(tmp_path / "m", "a/b/c")
    upload_hub.refuse_with = 403
    with pytest.raises(HubUploadError, match=r"refused the upload to 'me/m' \(403\): log in"):
        upload_folder(tmp_path / "m", "me/m")
