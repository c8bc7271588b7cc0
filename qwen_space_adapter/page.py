"""The Space's page model: which steps a submit runs, what each takes and gives. Pure, no I/O.

A Gradio page is a graph: components with default values, and dependencies (steps) triggered by
component events or chained after another step (`.then` / `.success`). The browser answers a
submit by running the input's `submit` step, then every step chained after it, in order, each
taking its inputs from the page's current component values and writing its outputs back.

The adapter does exactly that instead of assuming "add_text, then predict": `Page.from_config`
finds the input whose submit chain leads to a step that streams a chatbot (the answer step),
and a conversation's values (`dict[int, Any]`, component id to value: `initial_values`, `apply`,
`args`) are the store the steps read and write.
State components live on the server; gradio_client fills their slots itself, so they are
neither sent nor stored.

Supported families (by component type on the wire):
- modelscope_studio 0.x: `modelscopechatbot`, `modelscopemultimodalinput`;
- modelscope_studio 1.x legacy: `modelscopelegacychatbot`, `modelscopelegacymultimodalinput`;
- Gradio's own `chatbot` (tuples and messages formats), `multimodaltextbox` and `textbox`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .deltas import with_file_meta
from .errors import APIChangedError

OK, FAILED, CANCELLED = "ok", "failed", "cancelled"  # how a step ended, for `Page.runs`
CHATBOT_TYPES = ("modelscopechatbot", "modelscopelegacychatbot", "chatbot")
# In order of preference when a page has several inputs with a submit chain.
INPUT_TYPES = (
    "modelscopemultimodalinput",
    "modelscopelegacymultimodalinput",
    "multimodaltextbox",
    "textbox",
)
MULTIMODAL_TYPES = INPUT_TYPES[:3]
STREAMING_PROTOCOLS = ("sse_v1", "sse_v2", "sse_v2.1", "sse_v3")
# Component types gradio_client leaves out of a job's processed outputs (`utils.SKIP_COMPONENTS`).
LAYOUT_TYPES = frozenset(
    {
        "state",
        "row",
        "column",
        "tabs",
        "tab",
        "tabitem",
        "box",
        "form",
        "accordion",
        "group",
        "interpretation",
        "dataset",
    }
)


@dataclass(frozen=True)
class Component:
    id: int
    type: str
    default: Any = None
    props: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_state(self) -> bool:
        return self.type == "state"


@dataclass(frozen=True)
class Step:
    """One backend function the page runs: its fn index, wiring and how it runs."""

    fn_index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    queued: bool = True
    generator: bool = False
    only_on_success: bool = False
    only_on_failure: bool = False  # a `.failure` step (Gradio 6)
    name: str = ""
    parent: int | None = None  # the step it is chained after (`trigger_after`), None for a trigger


@dataclass(frozen=True)
class Page:
    """What a submit on the Space's page runs, read from its config."""

    version: str
    protocol: str
    app_id: Any
    components: dict[int, Component]
    input_id: int
    chatbot_id: int
    chain: tuple[Step, ...]  # the submit's own step first, then each chained step in order
    answer: int  # index in `chain` of the step that streams the chatbot
    load_steps: tuple[Step, ...] = ()
    # Per component: the chains (a `.change` step, then the steps chained after it) that the page
    # runs when a step's output changes that component's value, as the browser does.
    listeners: dict[int, tuple[tuple[Step, ...], ...]] = field(default_factory=dict)

    # --- facts -------------------------------------------------------------------------------
    @property
    def input_type(self) -> str:
        return self.components[self.input_id].type

    @property
    def chatbot_type(self) -> str:
        return self.components[self.chatbot_id].type

    @property
    def multimodal(self) -> bool:
        return self.input_type in MULTIMODAL_TYPES

    @property
    def messages_format(self) -> bool:
        """Gradio's chatbot in `type="messages"`: a list of role/content dicts, not pairs.
        Gradio 6 dropped the `type` prop: its chatbot holds messages only."""
        props = self.components[self.chatbot_id].props
        major = self.version.split(".")[0]
        gradio6 = self.chatbot_type == "chatbot" and "type" not in props and major.isdigit() and int(major) >= 6
        return props.get("type") == "messages" or gradio6

    @property
    def answer_step(self) -> Step:
        return self.chain[self.answer]

    def types(self, ids: Iterable[int]) -> tuple[str, ...]:
        return tuple(self.components[i].type if i in self.components else "?" for i in ids)

    def output_types(self, step: Step) -> tuple[str, ...]:
        return self.types(step.outputs)

    def skipped_outputs(self, step: Step) -> tuple[bool, ...]:
        """Which outputs gradio_client drops from a processed result (state, layout blocks)."""
        return tuple(t in LAYOUT_TYPES for t in self.output_types(step))

    @property
    def major(self) -> int:
        """The Gradio major version: its frontend decides which chained steps run after what."""
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    def runs(self, step: Step, outcomes: dict[int, str]) -> bool:
        """Whether the page's frontend runs `step`, given how the steps before it ended
        (`OK`, `FAILED`, `CANCELLED`). A trigger always runs; a chained step after its parent:
        - Gradio 4 and 5: every chained step after a success or a cancel (a cancel completes
          the event), all but `.success` steps after a failure;
        - Gradio 6: `.success` and `.then` steps after a success, `.failure` and `.then` steps
          after a cancel, only `.failure` steps after a failure.
        """
        if step.parent is None:
            return True
        outcome = outcomes.get(step.parent)
        if outcome is None:
            return False
        if self.major >= 6:
            if outcome == OK:
                return not step.only_on_failure
            if outcome == CANCELLED:
                return not step.only_on_success
            return step.only_on_failure
        return outcome != FAILED or not step.only_on_success

    # --- the walk --------------------------------------------------------------------------------
    @property
    def before_answer(self) -> tuple[Step, ...]:
        """The chained steps a submit runs before its answer step (adding the message, ...)."""
        return self.chain[: self.answer]

    @property
    def after_answer(self) -> tuple[Step, ...]:
        """The chained steps after the answer step (re-enabling the input, saving history...)."""
        return self.chain[self.answer + 1 :]

    def walk(self, steps: Iterable[Step], outcomes: dict[int, str]) -> Iterator[Step]:
        """The steps of `steps` that the page runs, in order. Each is decided (`runs`) only when
        asked for, so the caller records how each step ended in `outcomes` before the next: the
        one walk of a chain, shared by the adapter's turns and the harness's recorder."""
        for step in steps:
            if self.runs(step, outcomes):
                yield step

    def event_fields(self, step: Step, trigger_id: int | None) -> dict[str, Any]:
        """What the page sends with a step besides its data: the component whose event started
        the chain, and the event's data. Gradio 6's frontend leaves `event_data` out for the
        event's own step (it is undefined there) and sends null with the chained ones."""
        if self.major >= 6 and step.parent is None:
            return {"trigger_id": trigger_id}
        return {"event_data": None, "trigger_id": trigger_id}

    def wire_data(self, step: Step, values: dict[int, Any]) -> list[Any]:
        """The step's inputs as the page sends them: every slot, state ones as their defaults
        (the server reads a State from the session and ignores what is sent)."""
        return [self._sent(i, values) for i in step.inputs]

    def args(self, step: Step, values: dict[int, Any]) -> list[Any]:
        """The step's inputs as gradio_client takes them: state slots left out (it fills them)."""
        return [self._sent(i, values) for i in step.inputs if not self._is_state(i)]

    def _is_state(self, comp_id: int) -> bool:
        return self.components.get(comp_id, Component(comp_id, "?")).is_state

    def _sent(self, comp_id: int, values: dict[int, Any]) -> Any:
        """One input as sent. The chatbot goes with the meta tag on each file part, which
        Gradio 6 requires."""
        if self._is_state(comp_id):
            return self.components[comp_id].default
        value = values.get(comp_id)
        if comp_id != self.chatbot_id:
            return value
        if self.chatbot_type.startswith("modelscope"):
            return _with_files_lists(value)
        return with_file_meta(value)

    def changed(self, step: Step, before: dict[int, Any], after: dict[int, Any]) -> list[int]:
        """The components with `.change` listeners whose value `step`'s outputs changed."""
        return [i for i in dict.fromkeys(step.outputs) if i in self.listeners and before.get(i) != after.get(i)]

    def describe(self) -> dict[str, Any]:
        """The facts a report or a transcript records about the Space's page."""
        return {
            "gradio_version": self.version,
            "protocol": self.protocol,
            "chain": [s.fn_index for s in self.chain],
            "answer": self.answer_step.fn_index,
            "input_type": self.input_type,
            "chatbot_type": self.chatbot_type,
        }

    # --- the store of component values ---------------------------------------------------------
    def initial_values(self) -> dict[int, Any]:
        """The values a fresh page holds: every non-state component's config default."""
        return {c.id: c.default for c in self.components.values() if not c.is_state}

    def user_value(self, prompt: str, files: list[Any]) -> Any:
        """What the input holds when the user submits `prompt` with uploaded `files`."""
        if self.multimodal:
            return {"text": prompt, "files": files}
        return prompt

    def apply(self, step: Step, values: dict[int, Any], data: list[Any]) -> None:
        """Write a step's outputs (wire order) into the store, honouring `gr.update` dicts."""
        for comp_id, value in zip(step.outputs, data, strict=False):
            comp = self.components.get(comp_id)
            if comp is None or comp.is_state:
                continue
            if isinstance(value, dict) and value.get("__type__") == "update":
                if "value" in value:
                    values[comp_id] = value["value"]
                continue
            values[comp_id] = value

    def held(self, step: Step, values: dict[int, Any]) -> list[Any]:
        """The values the page holds for a step's outputs, in wire order (None for state)."""
        return [None if self._is_state(i) else values.get(i) for i in step.outputs]

    def chatbot_of(self, step: Step, data: list[Any]) -> Any:
        """The chatbot among a step's outputs (None when the step does not output it)."""
        for comp_id, value in zip(step.outputs, data, strict=False):
            if comp_id == self.chatbot_id:
                if isinstance(value, dict) and value.get("__type__") == "update":
                    return value.get("value")
                return value
        return None

    # --- reading it from a config --------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Page:
        """Find the submit chain that answers in a chatbot; raise `APIChangedError` if none does."""
        protocol = str(config.get("protocol", "ws"))
        version = str(config.get("version", "?"))
        if protocol not in STREAMING_PROTOCOLS:
            raise APIChangedError(
                f"The Space runs Gradio {version} with the {protocol!r} protocol, which the current "
                "gradio_client cannot stream. Point space= at a Space on Gradio 4 or newer."
            )
        components = {
            c["id"]: Component(c["id"], c.get("type", ""), _default(c.get("props") or {}), c.get("props") or {})
            for c in config.get("components", [])
        }
        deps = [_step_and_dep(i, d) for i, d in enumerate(config.get("dependencies", []))]
        found = []
        for step, dep in deps:
            for comp_id, event in _targets(dep):
                comp = components.get(comp_id)
                if event == "submit" and comp is not None and comp.type in INPUT_TYPES and step is not None:
                    chain = _chain(step, deps, _major(version))
                    streams = _answer(chain, components)
                    if streams is not None:
                        found.append((INPUT_TYPES.index(comp.type), comp_id, chain, streams))
        if not found:
            raise APIChangedError(
                "The Space's page has no input whose submit leads to a chatbot that streams an "
                f"answer (Gradio {version}: {describe_config(config)}). It is not a chat UI this "
                "adapter knows; check space=, or report the layout to qwen_space_adapter."
            )
        found.sort(key=lambda f: (f[0], f[1]))
        _, input_id, chain, (answer, chatbot_id) = found[0]
        loads = tuple(
            step
            for step, dep in deps
            if step is not None and step.outputs and any(e == "load" for _, e in _targets(dep))
        )
        listeners: dict[int, list[tuple[Step, ...]]] = {}
        for step, dep in deps:
            for comp_id, event in _targets(dep):
                if event == "change" and step is not None and comp_id in components:
                    listeners.setdefault(comp_id, []).append(tuple(_chain(step, deps, _major(version))))
        return cls(
            version=version,
            protocol=protocol,
            app_id=config.get("app_id"),
            components=components,
            input_id=input_id,
            chatbot_id=chatbot_id,
            chain=tuple(chain),
            answer=answer,
            load_steps=loads,
            listeners={k: tuple(v) for k, v in listeners.items()},
        )


def _targets(dep: dict[str, Any]) -> list[tuple[Any, str]]:
    out = []
    for t in dep.get("targets") or []:
        if isinstance(t, list | tuple) and len(t) == 2:
            out.append((t[0], str(t[1])))
    return out


def _step_and_dep(index: int, dep: dict[str, Any]) -> tuple[Step | None, dict[str, Any]]:
    """The step of a dependency, or None for one without a backend function (JS only)."""
    if not dep.get("backend_fn", True):
        return None, dep
    fn_index = dep.get("id", index)
    step = Step(
        fn_index=int(fn_index),
        inputs=tuple(dep.get("inputs") or ()),
        outputs=tuple(dep.get("outputs") or ()),
        queued=dep.get("queue") is not False,
        generator=bool((dep.get("types") or {}).get("generator")),
        only_on_success=bool(dep.get("trigger_only_on_success")),
        only_on_failure=bool(dep.get("trigger_only_on_failure")),
        name=str(dep.get("api_name") or ""),
        parent=dep.get("trigger_after") if isinstance(dep.get("trigger_after"), int) else None,
    )
    return step, dep


def _default(props: dict[str, Any]) -> Any:
    """A component's initial value in the page: `value`, or a `BrowserState`'s `default_value`."""
    return props["value"] if "value" in props else props.get("default_value")


def _with_files_lists(chatbot: Any) -> Any:
    """A modelscope_studio chatbot as its page holds it: each message dict with a `files` list
    (the Space sends `files: null` for a bot message; the page's component makes it `[]`)."""
    if not isinstance(chatbot, list):
        return chatbot

    def fixed(message: Any) -> Any:
        if isinstance(message, dict) and "files" in message and message["files"] is None:
            return {**message, "files": []}
        if isinstance(message, list):
            return [fixed(m) for m in message]
        return message

    return [[fixed(side) for side in pair] if isinstance(pair, list) else pair for pair in chatbot]


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _chain(first: Step, deps: list[tuple[Step | None, dict[str, Any]]], major: int = 4) -> list[Step]:
    """The submit's step and every step chained after it, breadth first, as the browser runs them.

    A chained dependency without a backend function (JS only) is passed through: the steps
    after it still run.
    """
    by_id = {dep.get("id", i): (step, dep) for i, (step, dep) in enumerate(deps)}
    chain: list[Step] = [replace(first, parent=None)]
    frontier: list[Any] = [first.fn_index]
    seen = {first.fn_index}
    ran_as = {first.fn_index: first.fn_index}  # a JS-only step stands for the backend step before it
    while frontier:
        parent = frontier.pop(0)
        # Siblings in the order the frontend dispatches them: config order; Gradio 6 dispatches
        # a step's `.success` listeners before its `.then` ones.
        order = sorted(
            by_id.items(),
            key=lambda kv: (major >= 6 and not kv[1][1].get("trigger_only_on_success"), kv[0]),
        )
        for dep_id, (step, dep) in order:
            if dep.get("trigger_after") == parent and dep_id not in seen:
                seen.add(dep_id)
                frontier.append(dep_id)
                if step is None:
                    ran_as[dep_id] = ran_as[parent]
                else:
                    ran_as[dep_id] = dep_id
                    chain.append(replace(step, parent=ran_as[parent]))
    return chain


def _answer(chain: list[Step], components: dict[int, Component]) -> tuple[int, int] | None:
    """(index in chain, chatbot id) of the step that streams the answer into a chatbot.

    The last generator that writes a chatbot: the steps before it (adding the user's message,
    resolving an @-mention) may be generators too, and they come first. Without generator flags,
    the last step that writes a chatbot.
    """
    writers = []
    for i, step in enumerate(chain):
        for comp_id in step.outputs:
            comp = components.get(comp_id)
            if comp is not None and comp.type in CHATBOT_TYPES:
                writers.append((i, comp_id, step.generator))
                break
    if not writers:
        return None
    generators = [w for w in writers if w[2]]
    i, comp_id, _ = (generators or writers)[-1]
    return i, comp_id


def describe_config(config: dict[str, Any]) -> str:
    """A one-line summary of a config's steps, for error messages and reports."""
    types = {c["id"]: c.get("type", "") for c in config.get("components", [])}
    rows = []
    for i, dep in enumerate(config.get("dependencies", [])):
        ins = ", ".join(types.get(x, "?") for x in dep.get("inputs", []))
        outs = ", ".join(types.get(x, "?") for x in dep.get("outputs", []))
        rows.append(f"fn {dep.get('id', i)}: ({ins}) -> ({outs})")
    return "; ".join(rows) or "no endpoints"


def as_wire(result: Any, skipped: tuple[bool, ...]) -> list[Any]:
    """gradio_client's processed result back in wire order (it drops skipped outputs and returns
    a single output bare): the tap path and the public path then yield the same shape."""
    kept = sum(1 for s in skipped if not s)
    values = list(result) if isinstance(result, tuple) and kept != 1 else [result]
    it = iter(values)
    return [None if s else next(it, None) for s in skipped]
