"""Which Space UI a replica runs, and every pin its environment needs: the one place for them.

Flavors:
- `hand` (default): the hand-made app (`app.py`), shaped like the live Space; fast to build.
- `qwen-agent` = `qwen-agent==0.0.11`: the Qwen team's own UI (`qwen_agent.gui.web_ui.WebUI`) on
  Gradio 4.44.0 + modelscope_studio 0.5.0, the stack of the Space's time.
- `qwen-agent==X` for any release from 0.0.11 to 0.0.34. From 0.0.12 on the GUI is on Gradio 5
  (0.0.12-0.0.15: `gradio>=5.0.0` with gradio_client 1.4.0 and modelscope_studio 1.0 betas; later
  ones up to 0.0.34: Gradio 5.23.1 + modelscope_studio 1.1.7), through `components.legacy`.
- `gradio6`: a plain multimodal `gr.ChatInterface` on current Gradio (6.31, `gradio6_app.py`): what the
  Space becomes if the Qwen team moves it onto current Gradio. Its history is the chatbot value the
  client sends (as every ChatInterface's is), not a server-side State.

A Qwen-Agent release is installed without its dependencies, then with exactly what the
`qwen_agent.gui.web_ui` import chain needs (found by importing; checked after every build) plus
the release's own `gui` extra pins, read from its wheel. Its heavy extras (RAG, code
interpreter...) are never installed. The pins below are what makes each Gradio generation
import and serve under today's packages, per Python version (`audioop-lts` on 3.13, where the
standard library lost `audioop` that pydub, imported by Gradio, needs).

Pure Python, imported by the launcher only (the apps never need it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReplicaError

HERE = Path(__file__).resolve().parent
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
"""Python versions every flavor is built and tested on."""

AUDIOOP = 'audioop-lts; python_version >= "3.13"'
# dashscope (imported by qwen_agent.llm) reads TOML with tomli below 3.11 without declaring it.
TOMLI = 'tomli; python_version < "3.11"'
FIRST, LAST = (0, 0, 11), (0, 0, 34)
DEFAULT_RELEASE = "0.0.11"


@dataclass(frozen=True)
class Stack:
    """What a group of releases needs beside their own `gui` pins: the rest of the
    `qwen_agent.gui.web_ui` import chain (measured by importing in an empty environment), and
    the pins that make their Gradio import and serve under today's packages."""

    gradio: int  # the Gradio major version the releases' GUI pins
    chain: tuple[str, ...]
    compat: tuple[str, ...]


CHAIN_4 = ("openai", "tiktoken", "json5", "dashscope", TOMLI)
CHAIN_5 = (*CHAIN_4, "soundfile", "python-dotenv")
STACKS = {
    # 0.0.11: gradio 4.44.0, gradio_client 1.3.0, modelscope_studio 0.5.0.
    "gradio4": Stack(4, CHAIN_4, ("huggingface_hub<0.26", "fastapi<0.113", "starlette<0.39", AUDIOOP)),
    # 0.0.12-0.0.15: gradio>=5.0.0 with gradio_client 1.4.0 (so gradio 5.1), modelscope_studio
    # 1.0 betas; gradio 5.1 imports huggingface_hub.HfFolder, gone in huggingface_hub 1.0.
    "gradio5.0": Stack(5, CHAIN_5, ("huggingface_hub<1.0", AUDIOOP)),
    # 0.0.16-0.0.34: gradio 5.23.1, gradio_client 1.8.0, modelscope_studio 1.1.7.
    "gradio5": Stack(5, CHAIN_5, (AUDIOOP,)),
}


def stack_of(release: str) -> Stack:
    """The stack of a Qwen-Agent release (the groups were read from the releases' metadata)."""
    version = _version(release)
    return STACKS["gradio4" if version <= (0, 0, 11) else "gradio5.0" if version <= (0, 0, 15) else "gradio5"]


@dataclass(frozen=True)
class Flavor:
    """One replica UI: its app script, what its environment installs, what it supports."""

    ui: str  # canonical name: "hand", "gradio6" or "qwen-agent==X"
    app: Path
    release: str | None = None  # the Qwen-Agent release, for real-UI flavors
    pythons: tuple[str, ...] = PYTHONS
    requirements: Path = HERE / "requirements.txt"  # what pip installs, for flavors without a release
    imports: str = "import gradio, modelscope_studio"  # proves a fresh environment serves the app

    @property
    def real_ui(self) -> bool:
        """A Qwen-Agent release's own UI (its layout options `agents` and `mention` apply)."""
        return self.release is not None

    @property
    def slug(self) -> str:
        return self.ui if self.release is None else f"qwen-agent-{self.release}"

    def pins(self) -> str:
        """Everything this module decides about the environment, as text (hashed into its key)."""
        if self.release is None:  # the requirement lines; comments may change without a rebuild
            lines = self.requirements.read_text().splitlines()
            return "\n".join(x.strip() for x in lines if x.strip() and not x.strip().startswith("#"))
        stack = stack_of(self.release)
        return json.dumps({"qwen-agent": self.release, "chain": stack.chain, "compat": stack.compat})

    def key(self, python_tag: str) -> str:
        """The cache folder name: a change of pins or interpreter builds a fresh environment."""
        digest = hashlib.sha256(self.pins().encode()).hexdigest()[:10]
        return f"replica-{self.slug}-{python_tag}-{digest}"


HAND = Flavor(ui="hand", app=HERE / "app.py")
GRADIO6 = Flavor(
    ui="gradio6",
    app=HERE / "gradio6_app.py",
    requirements=HERE / "requirements-gradio6.txt",
    imports="import gradio; assert gradio.__version__.startswith('6.'), gradio.__version__",
)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def flavor(ui: str | None) -> Flavor:
    """The flavor named by `--ui`; raises `ReplicaError` saying what is accepted."""
    name = (ui or "hand").strip()
    if name == "hand":
        return HAND
    if name == "gradio6":
        return GRADIO6
    m = re.fullmatch(r"qwen-agent(?:==(\d+\.\d+\.\d+))?", name.replace("_", "-"))
    if not m:
        raise ReplicaError(
            f"Unknown replica UI {ui!r}: use 'hand' (default), 'gradio6' (a gr.ChatInterface on "
            f"Gradio 6), 'qwen-agent' (release {DEFAULT_RELEASE}) or 'qwen-agent==X' with X from "
            "0.0.11 to 0.0.34."
        )
    release = m.group(1) or DEFAULT_RELEASE
    if not FIRST <= _version(release) <= LAST:
        raise ReplicaError(
            f"qwen-agent=={release} is not a supported replica UI: releases from 0.0.11 "
            "(Gradio 4) to 0.0.34 (Gradio 5 from 0.0.12 on) are."
        )
    return Flavor(ui=f"qwen-agent=={release}", app=HERE / "qwen_app.py", release=release)


def gui_requirements(metadata: str) -> list[str]:
    """The `gui` extra's requirements from a wheel's METADATA, markers dropped."""
    found = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        spec, _, marker = line.removeprefix("Requires-Dist:").partition(";")
        if re.search(r"""extra\s*==\s*['"]gui['"]""", marker):
            found.append(spec.strip().replace(" (", "").replace("(", "").replace(")", ""))
    return found


def gradio_generation(requirements: list[str]) -> int:
    """Which Gradio major a release's GUI pins (checked against its `Stack` at build time)."""
    for req in requirements:
        m = re.fullmatch(r"gradio\s*(?:==|>=|~=)\s*(\d+)\..*", req)
        if m:
            return int(m.group(1))
    raise ReplicaError(
        f"This Qwen-Agent release pins no Gradio for its GUI ({requirements}); use a release from 0.0.11 to 0.0.34."
    )
