"""The replica's life: options refused before anything starts, a start that says why it failed,
readiness that Gradio's own stdout lines cannot fake, death with its parent, the interpreter it
runs on. Uses the hand-made flavor (fast) or tiny stand-in apps."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from qwen_space_adapter.errors import ReplicaError
from qwen_space_adapter.replica import Replica, ReplicaSettings
from qwen_space_adapter.replica import env as replica_env
from qwen_space_adapter.replica.flavors import HAND, flavor, gradio_generation, gui_requirements, stack_of

TRANSCRIPT = Path(__file__).parent / "fixtures" / "replica_transcript.json"


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files (the replica's logs) go to this test's folder, to prove none is left."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture
def busy_port() -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _bad_options(tmp: Path, port: int) -> list[tuple[dict[str, Any], str]]:
    bad = tmp / "bad.json"
    bad.write_text('{"format": "qwen-space-transcript", "version": 1, "turns": []}')
    return [
        ({"replay": str(bad)}, "Bad replay transcript: .*'turns' must be a non-empty list"),
        ({"replay": str(tmp / "missing.json")}, "cannot read transcript"),
        ({"fault": "bogus"}, "Unknown replica fault 'bogus': use one of error-before-first-token"),
        ({"port": port}, f"Port {port} on 127.0.0.1 is not free"),
        ({"ui": "gradio-chat"}, "Unknown replica UI 'gradio-chat'"),
        ({"ui": "qwen-agent==0.0.99"}, "qwen-agent==0.0.99 is not a supported replica UI"),
        ({"ui": "qwen-agent", "mention": True}, "mention needs at least two agents"),
        ({"agents": 2}, "agents and mention choose the layout of the real UI"),
        ({"ui": "qwen-agent", "agents": 0}, "at least one agent"),
        ({"replay": str(TRANSCRIPT), "replay_speed": 0}, "Replay speed must be positive"),
        ({"token_delay": -1}, "token_delay must not be negative"),
    ]


def test_bad_options_are_refused_before_starting(own_tmp: Path, busy_port: int) -> None:
    for options, message in _bad_options(own_tmp, busy_port):
        replica = Replica(**options)
        with pytest.raises(ReplicaError, match=message) as caught:
            replica.start(timeout=30)
        assert "\n" not in str(caught.value), options
        assert replica.process is None, options
    assert not list(own_tmp.glob("qwen-replica-*.log"))


def test_cli_says_what_is_wrong_in_one_line(tmp_path: Path, busy_port: int) -> None:
    cases = [
        (["--replay", str(tmp_path / "bad.json")], "Bad replay transcript"),
        (["--fault", "bogus"], "Unknown replica fault 'bogus'"),
        (["--port", str(busy_port)], f"Port {busy_port} on 127.0.0.1 is not free"),
        (["--ui", "nope"], "Unknown replica UI 'nope'"),
        (["--ui", "qwen-agent==0.0.5"], "is not a supported replica UI"),
        (["--ui", "qwen-agent", "--mention"], "mention needs at least two agents"),
    ]
    (tmp_path / "bad.json").write_text("{not json")
    for args, message in cases:
        r = subprocess.run(
            [sys.executable, "-m", "qwen_space_adapter", "replica", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, TMPDIR=str(tmp_path)),
        )
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qwen-space: error: "), (args, r.stderr)
        assert message in lines[0]
        assert "usage:" not in r.stderr and "GRADIO_SERVER_PORT" not in r.stderr
        assert r.stdout == ""
    assert not list(tmp_path.glob("qwen-replica-*.log"))


def _stand_in(tmp: Path, body: str) -> str:
    """A tiny app the launcher serves instead of a replica (runs in the replica's Python)."""
    script = tmp / "stand_in.py"
    script.write_text("import os, signal, sys, time\n" + body)
    return str(script)


def test_gradio_stdout_chatter_is_not_taken_for_the_url(own_tmp: Path) -> None:
    # Gradio 4 prints this on stdout at its 25th, 50th, 150th... launch, whatever `quiet` says:
    # the launcher took it for its URL line and killed a healthy replica (issue 14).
    app = _stand_in(
        own_tmp,
        (
            "print('Thanks for being a Gradio user! If you have questions or feedback, please join', flush=True)\n"
            "print('qwen-replica-ready http://127.0.0.1:9', flush=True)\n"
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
            "while True: time.sleep(60)\n"
        ),
    )
    replica = Replica(app=app)
    try:
        assert replica.start(timeout=60) == "http://127.0.0.1:9"
        assert "stdout: Thanks for being a Gradio user!" in replica.log_text()
    finally:
        replica.close()
    assert not list(own_tmp.glob("qwen-replica-*.log"))


def test_a_start_that_dies_is_retried_and_its_cause_reported(own_tmp: Path) -> None:
    count = own_tmp / "attempts"
    app = _stand_in(
        own_tmp,
        (
            f"open({str(count)!r}, 'a').write('x')\n"
            "print('Segmentation fault in a native module', file=sys.stderr)\n"
            "sys.exit(3)\n"
        ),
    )
    replica = Replica(app=app)
    with pytest.raises(ReplicaError) as caught:
        replica.start(timeout=60)
    message = str(caught.value)
    assert message.startswith("The hand replica did not start: it exited with code 3.")
    assert "Segmentation fault in a native module" in message
    assert count.read_text() == "xxx"  # three attempts
    assert not list(own_tmp.glob("qwen-replica-*.log"))


def test_the_apps_own_reason_is_the_error_and_not_retried(own_tmp: Path) -> None:
    count = own_tmp / "attempts"
    app = _stand_in(
        own_tmp,
        (
            f"open({str(count)!r}, 'a').write('x')\n"
            "print('replica error: port 7860 on 127.0.0.1 is in use', file=sys.stderr, flush=True)\n"
            "os._exit(2)\n"
        ),
    )
    with pytest.raises(ReplicaError, match=r"^The hand replica did not start: port 7860 on 127.0.0.1 is in use$"):
        Replica(app=app).start(timeout=60)
    assert count.read_text() == "x"


def test_replay_past_its_last_turn_is_an_error_naming_transcript_and_turn(qwen_replica_factory: Any) -> None:
    turns = len(json.loads(TRANSCRIPT.read_text())["turns"])
    replica = qwen_replica_factory(replay=str(TRANSCRIPT), replay_speed=100.0)
    client = Client(replica.url, verbose=False, download_files=False)
    chatbot: list[Any] = []
    try:
        for _ in range(turns):
            added = client.submit({"text": "again", "files": []}, chatbot, fn_index=1).result()
            chatbot = client.submit(added[1], 0, fn_index=2).result()
        added = client.submit({"text": "one more", "files": []}, chatbot, fn_index=1).result()
        with pytest.raises(
            Exception,
            match=rf"{TRANSCRIPT.name} records {turns} turn\(s\); this "
            rf"conversation asked for turn {turns + 1}",
        ):
            client.submit(added[1], 0, fn_index=2).result()
    finally:
        client.close()


# --- dies with its parent -------------------------------------------------------------------

PARENT = """
import sys, time
from qwen_space_adapter.replica import Replica
replica = Replica(token_delay=0.005)
replica.start()
print(replica.pid, replica.url, flush=True)
time.sleep(600)
"""


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    """Whether `pid` (not our child) ended within `timeout`: a pidfd turns readable at its exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_replica_dies_with_its_parent(sig: signal.Signals) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        pid_text, url = parent.stdout.readline().split()
        pid = int(pid_text)
        assert httpx.get(url + "/config", timeout=10).status_code == 200
        parent.send_signal(sig)
        assert parent.wait(timeout=30) == -sig
        assert _wait_gone(pid), "the replica outlived its parent"
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/config", timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_sigterm_chains_the_previous_handler() -> None:
    code = PARENT.replace(
        "replica = Replica",
        (
            "import signal\n"
            "signal.signal(signal.SIGTERM, lambda *_: (print('previous handler ran', flush=True), sys.exit(7)))\n"
            "replica = Replica"
        ),
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline().split()[0])
        parent.send_signal(signal.SIGTERM)
        assert parent.stdout.readline().strip() == "previous handler ran"
        assert parent.wait(timeout=30) == 7
        assert _wait_gone(pid, timeout=1)  # stopped before the previous handler ran
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# --- flavors and interpreters ---------------------------------------------------------------


def test_flavor_names() -> None:
    assert flavor(None) is HAND and flavor("hand") is HAND
    assert flavor("qwen-agent").ui == "qwen-agent==0.0.11"
    assert flavor("qwen_agent==0.0.34").release == "0.0.34"
    assert flavor("qwen-agent==0.0.20").app.name == "qwen_app.py"
    keys = {flavor(u).key("py311") for u in ("hand", "qwen-agent==0.0.11", "qwen-agent==0.0.34")}
    assert len(keys) == 3 and flavor("qwen-agent").key("py311") != flavor("qwen-agent").key("py313")


def test_gui_pins_are_read_from_the_release_metadata() -> None:
    metadata = (
        "Requires-Dist: openai\n"
        "Requires-Dist: gradio (==4.44.0) ; extra == 'gui'\n"
        "Requires-Dist: modelscope-studio (==0.5.0) ; extra == 'gui'\n"
        "Requires-Dist: jieba ; extra == 'rag'\n"
        'Requires-Dist: gradio==5.23.1; extra == "gui"\n'
    )
    pins = gui_requirements(metadata)
    assert pins == ["gradio==4.44.0", "modelscope-studio==0.5.0", "gradio==5.23.1"]
    assert gradio_generation(pins[:2]) == 4 and gradio_generation(pins[2:]) == 5
    assert gradio_generation(["gradio>=5.0.0"]) == 5
    with pytest.raises(ReplicaError, match="pins no Gradio"):
        gradio_generation(["pydantic==2.9.2"])
    assert [stack_of(r).gradio for r in ("0.0.11", "0.0.12", "0.0.15", "0.0.16", "0.0.34")] == [4, 5, 5, 5, 5]
    assert "huggingface_hub<1.0" in stack_of("0.0.14").compat  # gradio 5.1 imports HfFolder


def _pyenv(version: str) -> str | None:
    for path in replica_env.candidates():
        if replica_env.python_version(path) == version:
            return path
    return None


def test_an_unsupported_interpreter_is_refused_with_advice() -> None:
    old = _pyenv("3.9") or _pyenv("3.8")
    if old is None:
        pytest.skip("no Python older than 3.10 on this machine")
    with pytest.raises(ReplicaError) as caught:
        replica_env.choose_python(HAND, old)
    message = str(caught.value)
    assert "runs on Python 3.10, 3.11, 3.12, 3.13" in message and "--python" in message
    assert "QWEN_SPACE_REPLICA_ENV" in message


def test_a_supported_interpreter_on_the_machine_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_SPACE_REPLICA_PYTHON", raising=False)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    other = next((v for v in ("3.12", "3.10", "3.13", "3.11") if v != here and _pyenv(v)), None)
    if other is None:
        pytest.skip("no second supported Python on this machine")
    only_other = HAND.__class__(ui="hand", app=HAND.app, pythons=(other,))
    python, version = replica_env.choose_python(only_other)
    assert version == other and python != sys.executable
    monkeypatch.setattr(replica_env, "candidates", lambda: [])
    with pytest.raises(ReplicaError, match=rf"runs on Python {other}; this is Python {here} and no supported"):
        replica_env.choose_python(only_other)


def test_the_interpreter_can_be_named_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    other = next((v for v in ("3.12", "3.10", "3.13", "3.11") if v != here and _pyenv(v)), None)
    if other is None:
        pytest.skip("no second supported Python on this machine")
    monkeypatch.setenv("QWEN_SPACE_REPLICA_PYTHON", str(_pyenv(other)))
    assert replica_env.choose_python(HAND) == (_pyenv(other), other)
    assert replica_env.choose_python(HAND, sys.executable) == (sys.executable, here)  # --python wins


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_the_hand_replica_runs_on_each_python(version: str) -> None:
    python = _pyenv(version)
    if python is None:
        pytest.skip(f"Python {version} is not installed here")
    with Replica(ReplicaSettings(python=python, token_delay=0.001)) as replica:
        client = Client(replica.url, verbose=False, download_files=False)
        try:
            added = client.submit({"text": "hi", "files": []}, [], fn_index=1).result()
            final = client.submit(added[1], 0, fn_index=2).result()
        finally:
            client.close()
    assert final[0][1][0]["text"].startswith('You said: "hi".')


# --- issue 19, item 13 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"port": "abc"}, "port must be an integer from 0 to 65535"),
        ({"port": True}, "port must be an integer"),
        ({"port": 70000}, "port must be an integer from 0 to 65535"),
        ({"port": 8080.0}, "port must be an integer"),
        ({"host": 127}, "host must be a host name"),
        ({"token_delay": "fast"}, "token_delay must be a number"),
        ({"agents": "2"}, "agents must be an integer"),
        ({"mention": "yes"}, "mention must be True or False"),
        ({"extra_args": "--x"}, "extra_args must be a list of strings"),
    ],
)
def test_a_setting_of_the_wrong_type_is_refused_at_construction(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ReplicaError, match=words) as caught:
        Replica(**options)
    assert "\n" not in str(caught.value)
    settings = ReplicaSettings(**options)  # a settings object built by hand: checked at construction too
    with pytest.raises(ReplicaError, match=words):
        Replica(settings)


def _port_with_lingering_connection() -> int:
    """A port whose server (listening with SO_REUSEADDR, as uvicorn does) is gone, while the
    connection it closed first lingers in TIME_WAIT: the state a replica killed mid-answer leaves."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server side closes first: its end goes to TIME_WAIT
    assert client.recv(1) == b""  # the FIN arrived
    client.close()
    listener.close()
    return int(port)


def test_a_port_left_by_a_killed_server_can_be_used_again() -> None:
    from qwen_space_adapter.replica.launcher import check_port

    port = _port_with_lingering_connection()
    check_port("127.0.0.1", port)  # used to raise "not free (Address already in use)" for ~60 s
    with socket.socket() as other:  # and a port a server listens on is still refused
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(ReplicaError, match="is not free"):
            check_port("127.0.0.1", other.getsockname()[1])


STUCK_REPLICA = """
import importlib.util, signal, sys, time
spec = importlib.util.spec_from_file_location("serving", sys.argv[1])
serving = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serving)
serving.CLOSE_GRACE = 0.5
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a clean stop that never happens
serving.watch_parent()
print("watching", flush=True)
while True:
    time.sleep(1)
"""


def test_a_replica_whose_clean_stop_hangs_still_dies_with_its_parent() -> None:
    """The watchdog asks for a clean stop when its parent is gone; when that does not end the
    process (a stuck main thread, a close that hangs), the watchdog ends it itself."""
    from qwen_space_adapter.replica import serving

    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_REPLICA, serving.__file__],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(read,),
        env={**os.environ, serving.PARENT_FD_ENV: str(read)},
    )
    os.close(read)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "watching"
        os.close(write)  # the parent's end: as if the parent died
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
