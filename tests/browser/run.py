"""One flavor's browser-equivalence run: both clients through their own recording proxy in front
of the same replica, normalised and compared. Used by the test and by `python -m tests.browser.dump`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .compare import ACCEPTED, Normaliser, diff, kinds, summary
from .driver import run_browser
from .proxy import RecordingProxy
from .scenario import Outcome, run_adapter, turns


@dataclass(frozen=True)
class Case:
    """A replica flavor to judge: its id in the test matrix and its `ReplicaSettings`."""

    id: str
    settings: dict[str, Any]
    page_limits: tuple[str, ...] = ()  # what the page itself cannot do in the scenario (xfails the judge's test)

    @property
    def mention(self) -> bool:
        return bool(self.settings.get("mention"))


@dataclass
class Result:
    """Both recordings, raw and normalised, and what differs."""

    config: dict[str, Any]
    browser_raw: list[dict[str, Any]]
    adapter_raw: list[dict[str, Any]]
    browser_outcomes: list[Outcome]
    adapter_outcomes: list[Outcome]
    retried: list[str] = field(default_factory=list)  # why the browser's run was played again
    browser: list[dict[str, Any]] = field(default_factory=list)
    adapter: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        norm = Normaliser(self.config)
        self.browser, self.adapter = norm.steps(self.browser_raw), norm.steps(self.adapter_raw)

    @property
    def diff(self) -> str:
        return diff(self.browser, self.adapter)

    @property
    def differences(self) -> list[str]:
        return summary(self.browser, self.adapter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": [{"name": a.name, "path": a.path.pattern, "why": a.why} for a in ACCEPTED],
            "browser_retried": self.retried,
            "kinds": kinds(self.differences),
            "differences": self.differences,
            "diff": self.diff.splitlines(),
            "browser": self.browser,
            "adapter": self.adapter,
            "outcomes": {
                "browser": [o.__dict__ for o in self.browser_outcomes],
                "adapter": [o.__dict__ for o in self.adapter_outcomes],
            },
            "raw": {"browser": self.browser_raw, "adapter": self.adapter_raw},
            "config": self.config,
        }


def run_case(chromium: Any, replica_url: str, mention: bool, folder: Path | None = None) -> Result:
    """Play the scenario on `replica_url` with the browser, then with the adapter, each recorded."""
    folder = folder or Path(tempfile.mkdtemp(prefix="qwen-browser-"))
    scenario = turns(mention)
    config = httpx.get(replica_url.rstrip("/") + "/config", timeout=30).json()
    retried: list[str] = []
    for _attempt in range(2):
        with RecordingProxy(replica_url, "browser") as proxy:
            browser_outcomes = run_browser(chromium, proxy, scenario, folder)
            browser_raw = proxy.recording()
        crashes = [o.unfinished for o in browser_outcomes if o.unfinished and "errors in the page: [" in o.unfinished]
        crash = crashes[0] if crashes else None
        if crash is None:
            break
        # The page's own script threw (seen once on 0.0.34: a race in its chatbot while a streamed answer
        # arrives on a loaded machine): a fresh tab, a fresh session, once. A second crash is reported.
        retried.append(crash)
    with RecordingProxy(replica_url, "adapter") as proxy:
        adapter_outcomes = run_adapter(proxy, scenario, folder)
        adapter_raw = proxy.recording()
    return Result(config, browser_raw, adapter_raw, browser_outcomes, adapter_outcomes, retried=retried)
