"""The browser-equivalence judge (issue 18): the page's own browser, recorded next to the adapter.

- `proxy.py`: a recording reverse proxy on loopback (SSE streamed through, every exchange kept in order);
- `driver.py`: headless Chromium (Debian's, through Playwright's `executable_path`) playing the page as a person;
- `scenario.py`: the turns both clients play, and the adapter's side through its public API;
- `compare.py`: the normaliser, the named `ACCEPTED` differences, the diff and the per-field summary;
- `run.py`: one flavor end to end; `dump.py`: the same from the command line, written to JSON;
- `fixtures.py`: the session's browser (skipped without one, failed in CI).

Run: `pytest tests/test_browser_equivalence.py` (one browser, one replica per flavor), or for one flavor
`python -m tests.browser.dump --ui qwen-agent --agents 2 --mention -o /tmp/mention.json`.
"""
