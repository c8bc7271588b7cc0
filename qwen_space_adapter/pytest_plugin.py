"""pytest plugin: point tests at the live Space, a duplicate, or a local replica.

Registered through the `pytest11` entry point, so installing the package is enough:

    pytest --qwen-space=replica                 # start a local replica for the session
    pytest --qwen-space=Qwen/Qwen2.5-1M-Demo    # the live Space (needs network)
    pytest --qwen-space=http://127.0.0.1:7860   # any running copy

Fixtures: `qwen_space_url` (the target's URL), `qwen_provider` (the provider bound to it),
`qwen_replica` (a session-wide replica; `qwen_replica_url` is its URL),
`qwen_replica_factory` (replicas with settings, stopped after the test; `ui=`, `agents=` and
`mention=` pick the Qwen team's real UI and its layout) and `qwen_shared_replica` (the same, shared by
the session: one replica per distinct settings). The session replica is the hand-made one unless
`QWEN_SPACE_REPLICA_UI` (with `QWEN_SPACE_REPLICA_AGENTS`, `QWEN_SPACE_REPLICA_MENTION`) names
another flavor, so a whole suite can run against the Qwen team's real UI. Tests marked
`@pytest.mark.live` need the target. Without `--qwen-space` they are skipped; with a target
that cannot be reached (a probe of a few seconds, never a hang) they fail, each with the reason:
a typo in CI's target must not look green.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

PROBE_TIMEOUT = 5.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qwen-space")
    group.addoption(
        "--qwen-space",
        action="store",
        default=None,
        metavar="TARGET",
        help="Space id, URL, or 'replica' (start a local one) for tests marked 'live'.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: needs a reachable Space target (see --qwen-space)")


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why `url` cannot serve as a Space right now, or None when its config answers."""
    import httpx

    try:
        # Never followed: a redirect may point off the origin the caller named.
        r = httpx.get(url.rstrip("/") + "/config", timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as e:
        return f"cannot reach {url}: {type(e).__name__}: {e}"
    if r.is_redirect:
        return f"{url}/config redirects to {r.headers.get('location')!r}, which is not followed"
    if r.status_code != 200:
        return f"{url}/config answered HTTP {r.status_code}"
    try:
        r.json()["dependencies"]
    except Exception:
        return f"{url} does not serve a Gradio config"
    return None


def session_replica_settings() -> dict[str, Any]:
    """The flavor of the session's replica: the hand-made one, unless the environment names
    another, so that a whole suite runs against the Qwen team's real UI unchanged:
    `QWEN_SPACE_REPLICA_UI=qwen-agent==0.0.34 QWEN_SPACE_REPLICA_AGENTS=2 QWEN_SPACE_REPLICA_MENTION=1`."""
    settings: dict[str, Any] = {"ui": os.environ.get("QWEN_SPACE_REPLICA_UI") or "hand"}
    if os.environ.get("QWEN_SPACE_REPLICA_AGENTS"):
        settings["agents"] = int(os.environ["QWEN_SPACE_REPLICA_AGENTS"])
    if os.environ.get("QWEN_SPACE_REPLICA_MENTION", "") not in ("", "0"):
        settings["mention"] = True
    return settings


@pytest.fixture(scope="session")
def qwen_replica(qwen_shared_replica: Callable[..., Any]) -> Any:
    """A replica Space for the whole test session (built and started once, stopped at the end);
    its flavor follows `session_replica_settings()`."""
    return qwen_shared_replica(**session_replica_settings())


@pytest.fixture(scope="session")
def qwen_replica_url(qwen_replica: Any) -> str:
    """The URL of the session's replica Space (started on a free port on first use)."""
    return str(qwen_replica.url)


def _fast(settings: dict[str, Any]) -> dict[str, Any]:
    settings.setdefault("token_delay", 0.005)
    settings.setdefault("prefill_base", 0.02)
    return settings


@pytest.fixture
def qwen_replica_factory() -> Iterator[Callable[..., Any]]:
    """Start replicas with launch settings; each is stopped after the test.

    Any `ReplicaSettings` field is accepted: faults and limits, and the UI with its layout,
    e.g. `qwen_replica_factory(ui="qwen-agent==0.0.34", agents=2, mention=False)`.
    """
    from .replica import Replica

    started: list[Any] = []

    def start(**settings: Any) -> Any:
        replica = Replica(**_fast(settings))
        started.append(replica)
        replica.start()
        return replica

    yield start
    for replica in started:
        replica.close()


@pytest.fixture(scope="session")
def qwen_shared_replica() -> Iterator[Callable[..., Any]]:
    """Replicas shared by the whole test session: the same settings give the same running
    replica, so a test matrix over UIs and layouts starts each one once. Tests must not rely
    on its stats starting at zero. Stopped at the end of the session."""
    from .replica import Replica, ReplicaSettings

    running: dict[str, Any] = {}

    def get(**settings: Any) -> Any:
        key = repr(ReplicaSettings(**_fast(settings)))  # every field, defaults included
        if key not in running:
            replica = Replica(**settings)
            replica.start()
            running[key] = replica
        return running[key]

    yield get
    for replica in running.values():
        replica.close()


@pytest.fixture(scope="session")
def qwen_space_url(request: pytest.FixtureRequest) -> str:
    """The URL of the `--qwen-space` target: skips the test when none was given, fails it when
    the given target cannot be reached (probed once per session)."""
    from .target import space_url

    target = request.config.getoption("--qwen-space")
    if not target:
        pytest.skip("no --qwen-space target given (use 'replica', a Space id or a URL)")
    if target == "replica":
        replica = request.getfixturevalue("qwen_replica")
        return str(replica.url)
    url = space_url(target)
    reason = probe(url)
    if reason:
        pytest.fail(
            f"--qwen-space={target} was given but cannot be used: {reason}. Fix the target, or leave "
            "the option out to skip the live tests.",
            pytrace=False,
        )
    return url


@pytest.fixture
def qwen_provider(qwen_space_url: str) -> type:
    """`Qwen_Qwen_2_5M` bound to the target: its `url` is the target's."""
    from .provider import Qwen_Qwen_2_5M

    return type("BoundQwen", (Qwen_Qwen_2_5M,), {"url": qwen_space_url})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("live") and "qwen_space_url" not in getattr(item, "fixturenames", ()):
            item.fixturenames.append("qwen_space_url")  # type: ignore[attr-defined]
