"""Endpoint discovery reads wiring, not fixed indices, and says what changed when nothing fits."""

from __future__ import annotations

import copy

import httpx
import pytest

from qwen_space_adapter.endpoints import discover
from qwen_space_adapter.errors import APIChangedError


@pytest.fixture(scope="module")
def config(qwen_replica):
    return httpx.get(qwen_replica.url + "/config").json()


def test_the_replica_matches_the_evidence(config):
    api = discover(config)
    assert (api.add_text, api.predict) == (1, 2)
    assert api.protocol.startswith("sse") and api.version.startswith("4.44")
    assert api.input_type == "modelscopemultimodalinput" and api.chatbot_type == "modelscopechatbot"
    assert api.predict_extra_inputs == (0,)
    assert api.add_text_outputs[api.add_text_chatbot] == "modelscopechatbot"


def test_indices_that_shift_are_followed(config):
    moved = copy.deepcopy(config)
    deps = moved["dependencies"]
    extra = copy.deepcopy(deps[0])  # a new button added before the others
    for i, dep in enumerate(deps):
        dep["id"] = i + 1
        if dep.get("trigger_after") is not None:
            dep["trigger_after"] += 1
    extra["id"] = 0
    moved["dependencies"] = [extra, *deps]
    api = discover(moved)
    assert (api.add_text, api.predict) == (2, 3)


def test_a_changed_api_is_refused_with_a_description(config):
    changed = copy.deepcopy(config)
    for c in changed["components"]:
        if c["type"] == "modelscopechatbot":
            c["type"] = "dataframe"
    with pytest.raises(APIChangedError) as info:
        discover(changed)
    assert "fn 1: (modelscopemultimodalinput, dataframe, state)" in str(info.value)


def test_an_old_protocol_is_refused(config):
    old = dict(config, protocol="ws", version="3.50.0")
    with pytest.raises(APIChangedError, match="'ws' protocol"):
        discover(old)


def test_ambiguous_wiring_falls_back_to_the_known_indices(config):
    twice = copy.deepcopy(config)
    twin = copy.deepcopy(twice["dependencies"][2])
    twin["id"] = 3
    twice["dependencies"].append(twin)  # a second predict chained after add_text
    api = discover(twice)
    assert (api.add_text, api.predict) == (1, 2)
