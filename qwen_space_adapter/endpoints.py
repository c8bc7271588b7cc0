"""Find the Space's `add_text` and `predict` endpoints in its config, or say what changed.

The evidence (shared/SPACE.md) names fn 1 and fn 2, but indices shift whenever the Space's
authors add a button. Wiring does not: `add_text` takes (input, chatbot, state) and is triggered
by the input's submit; `predict` takes (chatbot, state[, number]), outputs the chatbot and runs
`.then` after `add_text`. The known indices are the fallback when wiring is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import APIChangedError

CHATBOT_TYPES = ("modelscopechatbot", "chatbot")
INPUT_TYPES = ("modelscopemultimodalinput", "multimodaltextbox", "textbox")
KNOWN_ADD_TEXT, KNOWN_PREDICT = 1, 2


@dataclass(frozen=True)
class SpaceAPI:
    """What the adapter needs to know about a Space's API, read from its config."""

    add_text: int
    predict: int
    version: str
    protocol: str
    input_type: str
    chatbot_type: str
    predict_extra_inputs: tuple[Any, ...]  # values for inputs after (chatbot, state), e.g. the number
    add_text_outputs: tuple[str, ...] = ()  # component types, in the order the wire sends them
    predict_outputs: tuple[str, ...] = ()

    @property
    def add_text_chatbot(self) -> int:
        """Where the chatbot is among add_text's outputs, as sent on the wire."""
        return self.add_text_outputs.index(self.chatbot_type)

    def describe(self) -> dict[str, Any]:
        """The facts a report or a transcript records about the Space's API."""
        return {
            "gradio_version": self.version,
            "protocol": self.protocol,
            "add_text": self.add_text,
            "predict": self.predict,
            "input_type": self.input_type,
            "chatbot_type": self.chatbot_type,
        }

    @property
    def multimodal(self) -> bool:
        return self.input_type != "textbox"


def _types(config: dict[str, Any]) -> dict[int, str]:
    return {c["id"]: c.get("type", "") for c in config.get("components", [])}


def _defaults(config: dict[str, Any]) -> dict[int, Any]:
    return {c["id"]: c.get("props", {}).get("value") for c in config.get("components", [])}


def _describe(config: dict[str, Any]) -> str:
    types = _types(config)
    rows = []
    for i, dep in enumerate(config.get("dependencies", [])):
        ins = ", ".join(types.get(x, "?") for x in dep.get("inputs", []))
        outs = ", ".join(types.get(x, "?") for x in dep.get("outputs", []))
        rows.append(f"fn {dep.get('id', i)}: ({ins}) -> ({outs})")
    return "; ".join(rows) or "no endpoints"


def discover(config: dict[str, Any]) -> SpaceAPI:
    """Locate add_text and predict by component types and wiring; raise if the Space changed."""
    protocol = config.get("protocol", "ws")
    version = str(config.get("version", "?"))
    if protocol not in ("sse_v1", "sse_v2", "sse_v2.1", "sse_v3"):
        raise APIChangedError(
            f"The Space runs Gradio {version} with the {protocol!r} protocol, which the current "
            "gradio_client cannot stream. Update qwen_space_adapter or point space= elsewhere."
        )
    types = _types(config)
    deps = {dep.get("id", i): dep for i, dep in enumerate(config.get("dependencies", []))}

    def kinds(ids: list[int]) -> list[str]:
        return [types.get(x, "?") for x in ids]

    def is_add_text(dep: dict[str, Any]) -> bool:
        k = kinds(dep.get("inputs", []))
        return (
            len(k) == 3 and k[0] in INPUT_TYPES and k[1] in CHATBOT_TYPES and k[2] == "state"
            and dep.get("inputs") == dep.get("outputs")
        )

    def is_predict(dep: dict[str, Any]) -> bool:
        k = kinds(dep.get("inputs", []))
        o = kinds(dep.get("outputs", []))
        return len(k) >= 2 and k[0] in CHATBOT_TYPES and k[1] == "state" and o[:1] == k[:1]

    adds = [i for i, d in deps.items() if is_add_text(d)]
    preds = [i for i, d in deps.items() if is_predict(d)]
    pairs = [(a, p) for a in adds for p in preds if deps[p].get("trigger_after") == a]
    if len(pairs) != 1:
        known = KNOWN_ADD_TEXT in adds and KNOWN_PREDICT in preds
        if not known:
            raise APIChangedError(
                "The Space no longer has the add_text -> predict endpoints this adapter drives "
                f"(Gradio {version}: {_describe(config)}). Its API has changed; update "
                "qwen_space_adapter, or use a Space that still has the Qwen2.5-1M-Demo layout."
            )
        pairs = [(KNOWN_ADD_TEXT, KNOWN_PREDICT)]
    add, pred = pairs[0]
    defaults = _defaults(config)
    extra = tuple(
        defaults.get(x) if types.get(x) != "number" else (defaults.get(x) or 0)
        for x in deps[pred]["inputs"][2:]
        if types.get(x) != "state"
    )
    return SpaceAPI(
        add_text=add,
        predict=pred,
        version=version,
        protocol=protocol,
        input_type=kinds(deps[add]["inputs"])[0],
        chatbot_type=kinds(deps[add]["inputs"])[1],
        predict_extra_inputs=extra,
        add_text_outputs=tuple(kinds(deps[add]["outputs"])),
        predict_outputs=tuple(kinds(deps[pred]["outputs"])),
    )
