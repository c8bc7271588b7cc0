"""The conformance checks as pytest tests, through the package's pytest plugin.

    pytest --pyargs qwen_space_adapter.harness --qwen-space=replica
    pytest --pyargs qwen_space_adapter.harness --qwen-space=Qwen/Qwen2.5-1M-Demo --junitxml=out.xml

One test per check, sharing one `Suite` (so a live Space answers the shared sample once). The
tests are marked `live`: without `--qwen-space`, or when the target cannot be reached, they are
skipped with the reason after a short probe. Each check's data is attached with
`record_property`, so `--junitxml` carries the timing figures too.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from qwen_space_adapter.harness.checks import CHECK_NAMES, FAIL, SKIP, Suite

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def conformance_suite(qwen_space_url: str) -> Suite:
    """One suite per target for the module: checks share its sample answer and timings."""
    return Suite(qwen_space_url, timeout=300.0)


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_conformance(conformance_suite: Suite, check: str, record_property: Callable[[str, object], None]) -> None:
    result = conformance_suite.run(check)
    record_property("detail", result.detail)
    record_property("data", json.dumps(result.data, default=str)[:4000])
    if result.status == SKIP:
        pytest.skip(result.detail)
    if result.status == FAIL:
        pytest.fail(f"{result.title}: {result.detail}", pytrace=False)
    assert result.status != "error", f"{result.title} crashed: {result.detail}\n{result.data}"
