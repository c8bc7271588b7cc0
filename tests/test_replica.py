"""The replica speaks the Space's API as docs/space-api.md records it, through the current gradio_client."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import httpx
import pytest
from cli_session import interrupt, started
from gradio_client import Client

PROMPT = "Hello, replica"
USER_ENTRY = {
    "id": None,
    "elem_id": None,
    "elem_classes": None,
    "name": None,
    "text": PROMPT,
    "flushing": None,
    "avatar": "",
    "files": [],
}


@pytest.fixture
def hand(qwen_shared_replica):
    """The hand-made replica (these tests are about its API), whatever flavor the session's is."""
    return qwen_shared_replica(ui="hand")


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def _turn(client: Client, text: str, chatbot: list | None = None) -> tuple[list, list]:
    added = client.submit({"text": text, "files": []}, chatbot or [], fn_index=1).result()
    job = client.submit(added[1], 0, fn_index=2)
    outputs = list(job)
    return added, outputs


def test_config_is_the_spaces_stack(hand):
    config = httpx.get(hand.url + "/config").json()
    assert config["version"].startswith("4.44.")
    assert config["show_api"] is False
    types = {c["type"] for c in config["components"]}
    assert {"modelscopechatbot", "modelscopemultimodalinput", "state", "number", "button"} <= types
    deps = config["dependencies"]
    kinds = {c["id"]: c["type"] for c in config["components"]}
    assert [kinds[i] for i in deps[0]["outputs"]] == ["modelscopechatbot", "state"]
    assert [kinds[i] for i in deps[1]["inputs"]] == ["modelscopemultimodalinput", "modelscopechatbot", "state"]
    assert deps[1]["outputs"] == deps[1]["inputs"]
    assert [kinds[i] for i in deps[2]["inputs"]] == ["modelscopechatbot", "state", "number"]
    assert [kinds[i] for i in deps[2]["outputs"]] == ["modelscopechatbot"]
    assert deps[2]["trigger_after"] == 1


def test_add_text_and_predict_have_the_recorded_shapes(hand):
    client = _client(hand.url)
    try:
        added, outputs = _turn(client, PROMPT)
    finally:
        client.close()
    assert added[1] == [[USER_ENTRY, None]]
    first = outputs[0]
    assert first[0][0] == USER_ENTRY
    assert first[0][1][0]["text"] == "Qwen is thinking..."
    final_text = outputs[-1][0][1][0]["text"]
    assert set(outputs[-1][0][1][0]) == set(USER_ENTRY)
    assert final_text.startswith(f'You said: "{PROMPT}".')
    assert "\n<summary>" in final_text
    texts = [o[0][1][0]["text"] for o in outputs[1:-1]]
    assert len(texts) > 3 and all(b.startswith(a) for a, b in itertools.pairwise(texts))


def test_sessions_do_not_share_history(hand):
    a, b = _client(hand.url), _client(hand.url)
    try:
        _added, outputs = _turn(a, "my name is Ada")
        _, second = _turn(a, "what is my name?", outputs[-1])
        _, other = _turn(b, "who am I?")
    finally:
        a.close()
        b.close()
    assert 'your first message was: "my name is Ada"' in second[-1][-1][1][0]["text"]
    other_text = other[-1][0][1][0]["text"]
    assert "first turn" in other_text and "Ada" not in other_text


def test_the_url_fixture_is_the_session_replica(qwen_replica, qwen_replica_url):
    assert qwen_replica_url == qwen_replica.url
    assert httpx.get(qwen_replica_url + "/config").json()["dependencies"]


def test_clear_resets_the_chatbot(hand):
    client = _client(hand.url)
    try:
        assert client.predict(fn_index=0) == []
    finally:
        client.close()


def test_attached_file_is_read(hand, tmp_path):
    doc = tmp_path / "haystack.txt"
    doc.write_text("filler text. " * 20000 + "The pass key is 71432. " + "more filler. " * 20000)
    from gradio_client import handle_file

    client = _client(hand.url)
    try:
        added = client.submit(
            {"text": "What is the pass key?", "files": [handle_file(str(doc))]}, [], fn_index=1
        ).result()
        final = client.submit(added[1], 0, fn_index=2).result()
    finally:
        client.close()
    assert "The pass key is 71432." in final[0][1][0]["text"]
    assert added[1][0][0]["files"], "the user entry lists the attached file"


def test_replica_process_stops_with_its_group(qwen_replica_factory):
    replica = qwen_replica_factory()
    pid = replica.pid
    assert httpx.get(replica.url + "/config").status_code == 200
    replica.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(replica.url + "/config", timeout=2)


def test_cli_replica_prints_url_and_stops_on_interrupt():
    with started([sys.executable, "-m", "qwen_space_adapter", "replica", "--port", "0"]) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/config", timeout=5).status_code == 200
        code, _, stderr = interrupt(proc)
    assert code == 0, stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/config", timeout=2)


def test_replica_started_from_a_notebook_kernel_still_answers(monkeypatch, qwen_replica_factory):
    # ipykernel and Colab export an inline matplotlib backend the replica's environment lacks
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    replica = qwen_replica_factory()
    client = _client(replica.url)
    try:
        _, outputs = _turn(client, PROMPT)
    finally:
        client.close()
    assert outputs[-1][0][1][0]["text"].startswith(f'You said: "{PROMPT}".')


def test_no_replica_outlives_the_test_session(tmp_path):
    """A pytest session using the plugin's fixtures leaves no replica process behind."""
    pids = tmp_path / "pids.txt"
    (tmp_path / "test_inner.py").write_text(
        "def test_uses_replicas(qwen_replica, qwen_replica_factory, qwen_shared_replica):\n"
        "    other = qwen_replica_factory()\n"
        "    shared = qwen_shared_replica(token_delay=0.01)\n"
        f"    open({str(pids)!r}, 'w').write(f'{{qwen_replica.pid}} {{other.pid}} {{shared.pid}}')\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for pid in map(int, pids.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
