"""Reports of a suite run: a table for people, JSON for programs, JUnit XML for CI.

JUnit XML is what CI systems (GitHub Actions reporters, GitLab, Jenkins) already display, so a
nightly check of the live Space shows up next to the unit tests without any glue. The layout
follows the common JUnit schema: one `<testsuite>` with one `<testcase>` per check, a
`<failure>` for a failed check, `<error>` for a crash, `<skipped>` for one that did not apply;
the timing distributions go into `<properties>`.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .checks import ERROR, FAIL, PASS, SKIP, SuiteResult
from .metrics import METRICS, Distribution

JSON_FORMAT = "qwen-space-check"
JSON_VERSION = 1
_MARK = {PASS: "PASS", FAIL: "FAIL", SKIP: "skip", ERROR: "ERROR"}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.1f} s"
    return f"{value:.1f}"


def render_table(result: SuiteResult, width: int | None = None) -> str:
    """The human report: one line per check, then the timing percentiles."""
    width = width or max(100, shutil.get_terminal_size((120, 24)).columns)
    name_w = max(len(r.name) for r in result.results) if result.results else 5
    kind = "replica" if result.replica else "Space"
    lines = [f"Conformance of {result.target} ({kind} at {result.url})", ""]
    lines.append(f"{'check':<{name_w}}  {'result':<6}  {'time':>7}  detail")
    lines.append(f"{'-' * name_w}  ------  -------  {'-' * 40}")
    room = max(20, width - name_w - 20)
    for r in result.results:
        detail = r.detail if len(r.detail) <= room else r.detail[: room - 3] + "..."
        lines.append(f"{r.name:<{name_w}}  {_MARK[r.status]:<6}  {r.seconds:>6.2f}s  {detail}")
    lines.append("")
    lines.append(f"{'metric':<20} {'n':>5} {'p50':>10} {'p90':>10} {'p99':>10}")
    for key, dist in result.metrics.items():
        lines.append(
            f"{key:<20} {dist.n:>5} {_fmt(dist.p50, dist.unit):>10} "
            f"{_fmt(dist.p90, dist.unit):>10} {_fmt(dist.p99, dist.unit):>10}"
        )
    counts = {s: sum(r.status == s for r in result.results) for s in (PASS, FAIL, ERROR, SKIP)}
    verdict = "PASSED" if result.passed else "FAILED"
    lines.append("")
    lines.append(
        f"{verdict}: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[ERROR]} errors, "
        f"{counts[SKIP]} skipped in {result.seconds:.1f} s"
    )
    return "\n".join(lines)


def to_dict(result: SuiteResult) -> dict[str, Any]:
    """The machine report (the `--json` file); stable keys, documented in the harness docstring."""
    import qwen_space_adapter

    from .. import _gc_internals as gci

    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "target": result.target,
        "url": result.url,
        "replica": result.replica,
        "started_at": result.started_at,
        "seconds": round(result.seconds, 3),
        "passed": result.passed,
        "space": result.api,
        "environment": {
            "qwen_space_adapter": getattr(qwen_space_adapter, "__version__", "?"),
            "gradio_client": gci.GC_VERSION,
            "python": platform.python_version(),
        },
        "checks": [
            {
                "name": r.name,
                "title": r.title,
                "status": r.status,
                "seconds": round(r.seconds, 3),
                "detail": r.detail,
                "data": r.data,
            }
            for r in result.results
        ],
        "metrics": {k: {**v.as_dict(), "meaning": METRICS.get(k, "")} for k, v in result.metrics.items()},
    }


def write_json(result: SuiteResult, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_dict(result), indent=2, ensure_ascii=False, default=str) + "\n")
    return out


# Characters XML 1.0 cannot hold at all (even escaped); a Space's text may contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _safe(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def _metric_properties(metrics: dict[str, Distribution]) -> list[tuple[str, str]]:
    props = []
    for key, dist in metrics.items():
        props.append((f"{key}.n", str(dist.n)))
        for q in ("p50", "p90", "p99"):
            value = getattr(dist, q)
            if value is not None:
                props.append((f"{key}.{q}_{dist.unit.replace('1/', 'per_')}", f"{value:.6f}"))
    return props


def to_junit(result: SuiteResult) -> ET.ElementTree:
    """The JUnit XML tree: one testsuite, a testcase per check."""
    counts = {s: sum(r.status == s for r in result.results) for s in (FAIL, ERROR, SKIP)}
    root = ET.Element(
        "testsuites",
        name="qwen-space check",
        tests=str(len(result.results)),
        failures=str(counts[FAIL]),
        errors=str(counts[ERROR]),
        skipped=str(counts[SKIP]),
        time=f"{result.seconds:.3f}",
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name="qwen_space_adapter.conformance",
        tests=str(len(result.results)),
        failures=str(counts[FAIL]),
        errors=str(counts[ERROR]),
        skipped=str(counts[SKIP]),
        time=f"{result.seconds:.3f}",
        timestamp=result.started_at.split("+")[0],
        hostname=platform.node() or "localhost",
    )
    props = ET.SubElement(suite, "properties")
    base = [("target", result.target), ("url", result.url), ("replica", str(result.replica).lower())]
    for name, value in base + _metric_properties(result.metrics):
        ET.SubElement(props, "property", name=name, value=_safe(value))
    for r in result.results:
        case = ET.SubElement(
            suite, "testcase", classname="qwen_space_adapter.conformance", name=r.name, time=f"{r.seconds:.3f}"
        )
        if r.status == FAIL:
            ET.SubElement(case, "failure", message=_safe(r.detail), type="CheckFailed").text = _safe(
                f"{r.title}\n{r.detail}"
            )
        elif r.status == ERROR:
            ET.SubElement(case, "error", message=_safe(r.detail), type="Error").text = _safe(
                str(r.data.get("traceback", r.detail))
            )
        elif r.status == SKIP:
            ET.SubElement(case, "skipped", message=_safe(r.detail))
        else:
            ET.SubElement(case, "system-out").text = _safe(f"{r.title}: {r.detail}")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(result: SuiteResult, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_junit(result).write(out, encoding="utf-8", xml_declaration=True)
    return out


__all__ = ["render_table", "to_dict", "to_junit", "write_json", "write_junit"]
