"""The page's reference client: headless Chromium, driven as a person uses the page.

Types into the chat input, presses Enter, attaches a file with the page's own upload button (its
file input), and waits for each answer by reading the page: the answer's final text (the replica
ends every answer with a "Generation details" block) or the error toast of a failed answer, then
the chat input enabled again and no stop button, then no request of the page's chain in flight on
the proxy. No sleeps: every wait is for a condition, with a generous timeout that only fails.

Every request that is not to 127.0.0.1 is aborted (the pages ask for web fonts and CDN scripts
and work without them), so the test never leaves the machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .scenario import HEARTBEAT, Outcome, Turn, document

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 60_000
STUCK_MS = 20_000  # a page that re-enables its input after a failure does so in milliseconds
DONE_MARK = "Generation details"  # the replica's summary block: only a finished answer has it
FAULT_MARK = "Replica fault"  # the replica's error message, shown in the page's toast

_COUNT = "(m) => document.body.innerText.split(m).length - 1"
# The page is done with a turn when its input and upload button are usable again and no stop button is shown.
_SETTLED = """() => {
  const box = [...document.querySelectorAll('textarea')].find(t => t.offsetParent !== null);
  if (!box || box.disabled) return false;
  const stop = [...document.querySelectorAll('button')].find(b => b.offsetParent !== null &&
      /^stop$/i.test((b.getAttribute('aria-label') || b.textContent || '').trim()));
  if (stop) return false;
  // the upload button beside each file input (disabled while a chain runs, enabled last)
  return [...document.querySelectorAll('input[type=file]')].every(f => {
    const button = f.parentElement && f.parentElement.querySelector('button');
    return !button || !button.disabled;
  });
}"""


def chromium_path() -> str | None:
    """The system's Chromium (Debian's package), or `$QWEN_CHROMIUM`; None when there is none."""
    chosen = os.environ.get("QWEN_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).exists() else None
    return next((c for c in CHROMIUM_CANDIDATES if Path(c).exists()), shutil.which("chromium"))


@contextmanager
def browser() -> Iterator[Any]:
    """One headless Chromium for a whole test session, with a fresh profile, closed at the end."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("no Chromium found (apt-get install chromium, or set QWEN_CHROMIUM)")
    with sync_playwright() as pw:  # launch() gives Chromium a fresh temporary profile of its own
        b = pw.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _local_only(route: Any) -> None:
    if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1")):
        route.continue_()
    else:
        route.abort()


def run_browser(chromium: Any, proxy: Any, scenario: list[Turn], folder: Path) -> list[Outcome]:
    """Play the scenario on the page served through `proxy`, in a fresh browser context (its own
    session), and close the tab at the end (the heartbeat ends, as when a person leaves)."""
    context = chromium.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", _local_only)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outcomes = []
    try:
        proxy.mark(None)
        page.goto(proxy.url + "/")
        page.wait_for_function(_SETTLED)
        proxy.wait_idle(ignore=HEARTBEAT)
        for turn in scenario:
            proxy.mark(turn.label)
            try:
                outcomes.append(_turn(page, proxy, turn, folder))
            except Exception as e:  # kept, so the recording so far is still compared and dumped
                outcomes.append(
                    Outcome(
                        unfinished=f"the page did not finish turn {turn.label!r}: "
                        f"{str(e).splitlines()[0]}; errors in the page: {errors or 'none'}"
                    )
                )
                break
    finally:
        context.close()
    return outcomes


def _turn(page: Any, proxy: Any, turn: Turn, folder: Path) -> Outcome:
    done = page.evaluate(_COUNT, DONE_MARK)
    faults = page.evaluate(_COUNT, FAULT_MARK)
    if turn.attach:
        uploads = _uploads(proxy.exchanges)
        _attach(page, document(folder))
        _attached(page, proxy, document(folder).name, uploads)
        proxy.wait_idle(ignore=HEARTBEAT)
    box = page.locator("textarea:visible").first
    box.click()
    box.fill(turn.text)
    box.press("Enter")
    mark, before = (FAULT_MARK, faults) if turn.fails else (DONE_MARK, done)
    page.wait_for_function(f"([m, n]) => ({_COUNT})(m) > n", arg=[mark, before])
    try:
        page.wait_for_function(_SETTLED, timeout=STUCK_MS if turn.fails else TIMEOUT_MS)
    except Exception as e:
        proxy.wait_idle(ignore=HEARTBEAT)
        raise TimeoutError(
            f"the chat input stayed disabled (or the stop button shown) {STUCK_MS // 1000}s after "
            "the failed answer, with nothing in flight: a person cannot ask again on this page"
            if turn.fails
            else str(e)
        ) from e
    proxy.wait_idle(ignore=HEARTBEAT)
    texts = page.evaluate("() => document.body.innerText")
    return Outcome(text=texts, error=FAULT_MARK if turn.fails else None)


def _uploads(exchanges: list[Any]) -> int:
    return sum(1 for x in exchanges if x.path.endswith("/upload") and x.done)


def _attached(page: Any, proxy: Any, name: str, before: int) -> None:
    """Wait until the page has the file, as a person sees it: the page names it (modelscope's
    input, which uploads only on submit) or its upload is done (Gradio 6 shows an icon, no name).
    Two sources, so it polls both, each wait bounded; the total is bounded by TIMEOUT_MS."""
    import time

    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if _uploads(proxy.exchanges) > before:
            return
        try:
            page.wait_for_function("(n) => document.body.innerHTML.includes(n)", arg=name, timeout=200)
            return
        except Exception:  # Playwright's TimeoutError: look at the wire again
            continue
    raise TimeoutError(f"the page never showed nor uploaded {name}")


def _attach(page: Any, path: Path) -> None:
    """Attach a file as a person does: click the input's upload button, pick the file in the chooser.
    (A page whose file input has no button beside it gets the file set on the input itself.)"""
    field = page.locator("input[type=file]").first
    button = field.locator("xpath=..").locator("button")  # modelscope: the input's sibling button
    if not button.count():  # Gradio 6: the input sits in a hidden drop zone, the button elsewhere
        button = page.locator("button[data-testid=upload-button]:visible, button.upload-button:visible")
    if button.count():
        with page.expect_file_chooser() as chooser:
            button.first.click()
        chooser.value.set_files(str(path))
    else:
        field.set_input_files(str(path))
