"""Courtesy to a shared Space: local targets pass; heavy load elsewhere is refused; the plan is said first."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import InvalidRequestError
from .plan import LoadConfig
from .prompts import Prompt

MAX_SHARED_USERS = 2  # concurrent users allowed against a Space the caller does not say it owns


def is_local(url: str) -> bool:
    """Whether the target runs on this machine (loopback), where any load is the caller's own business."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def space_id_of(target: str | None) -> str | None:
    """The `owner/name` id when the target was given as one (a URL cannot be mapped back reliably)."""
    from ...target import SPACE_ID_RE

    return target if target and SPACE_ID_RE.match(target) else None


def ownership(space_id: str, token: str) -> tuple[bool | None, str]:
    """(owned, why): whether the token's account (or one of its organisations) owns the Space.

    None when it cannot be told (no huggingface_hub, no network, unknown Space): the check is a
    courtesy, so it fails soft and says why.
    """
    try:
        from huggingface_hub import HfApi
    except ImportError:
        return None, "ownership not checked: huggingface_hub is not installed"
    api = HfApi(token=token)
    try:
        me = api.whoami()
    except Exception as e:  # offline, bad token, Hub down: all mean "cannot tell"
        return None, f"ownership not checked: the Hub did not answer who the token belongs to ({type(e).__name__})"
    names = {me.get("name")} | {o.get("name") for o in me.get("orgs") or [] if isinstance(o, dict)}
    owner = space_id.split("/", 1)[0]
    try:
        author = getattr(api.space_info(space_id), "author", None) or owner
    except Exception:  # the id's owner is enough to judge
        author = owner
    account = me.get("name") or "the token's account"
    if author in names:
        return True, f"the token's account {account} owns {space_id}"
    return False, f"the token's account {account} does not own {space_id} (owner: {author})"


def check_courtesy(
    config: LoadConfig, levels: Sequence[float] | None = None, say: Callable[[str], None] | None = None
) -> None:
    """Refuse heavy load on a Space that may be shared, and say what will be sent; local targets pass.

    Raises `InvalidRequestError` (nothing sent) when more than 2 users, or an open loop, would
    hit a target not on this machine without `i_own_this_space`, or when a token shows that the
    account does not own the Space.
    """
    say = say or (lambda text: print(text, file=sys.stderr))
    if is_local(config.url):
        return
    shape = config.shape.check()
    peak_users = max([shape.level, *(levels or [])]) if shape.mode == "closed" else None
    space_id = space_id_of(config.target)
    owned: bool | None = None
    if config.token and space_id:
        owned, why = ownership(space_id, config.token)
        say(f"qwen-space load: {why}")
    heavy = peak_users is None or peak_users > MAX_SHARED_USERS
    if heavy and (not config.i_own_this_space or owned is False):
        what = (
            "an open loop (--rate) has no bound on concurrent users"
            if peak_users is None
            else (f"{peak_users:g} concurrent users")
        )
        reason = (
            "the token's account does not own it"
            if owned is False
            else "it may be shared with everyone; pass --i-own-this-space (i_own_this_space=True) if it is yours"
        )
        raise InvalidRequestError(
            f"Refusing to load {config.url}: {what}, against a Space not on this machine, where "
            f"at most {MAX_SHARED_USERS} are allowed because {reason}. Run a duplicate or a replica "
            "(TARGET 'replica') for heavier load."
        )
    say(describe_plan(config, levels))


def describe_plan(config: LoadConfig, levels: Sequence[float] | None = None) -> str:
    """What the run will send, in words: printed before a run against a Space that may be public."""
    shape = config.shape.check()
    if shape.mode == "closed":
        load = f"{shape.users} concurrent user(s)" + (f", {shape.ramp:g} added per second" if shape.ramp else "")
    else:
        load = f"Poisson arrivals at {shape.rate:g} request(s)/s"
    if levels:
        load += f"; sweep levels {', '.join(f'{x:g}' for x in levels)}"
    stop = " and ".join(
        s
        for s in (
            f"{shape.requests} request(s)" if shape.requests else "",
            f"{shape.duration:g} s" if shape.duration else "",
        )
        if s
    )
    lines = [
        f"qwen-space load will send to {config.url}: {load}, conversations of {shape.turns} turn(s), "
        f"stopping after {stop}{' per level' if levels else ''}. Prompts ({len(config.prompts)}, used in turn):",
    ]
    for p in config.prompts[:3]:
        text = " ".join(p.text.split())
        text = text if len(text) <= 100 else text[:97] + "..."
        files = "".join(f" + {Path(f).name} ({_size(f)})" for f in p.files)
        lines.append(f"  - {len(p.text)} chars: {text!r}{files}")
    if len(config.prompts) > 3:
        lines.append(f"  - ... and {len(config.prompts) - 3} more")
    uploads = upload_list(config.prompts)
    if uploads:
        # Every file, with its real path (symlinks and ../ resolved): nothing goes out unseen.
        lines.append(f"Files it will upload ({len(uploads)}):")
        lines += [f"  - {f} ({_size(f)})" for f in uploads]
    else:
        lines.append("Files it will upload: none.")
    return "\n".join(lines)


def upload_list(prompts: Sequence[Prompt]) -> list[str]:
    """Every distinct file the prompts attach, as its resolved absolute path, in first-use order."""
    seen: dict[str, None] = {}
    for prompt in prompts:
        for f in prompt.files:
            seen.setdefault(str(Path(f).resolve()), None)
    return list(seen)


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path):,} bytes"
    except OSError:
        return "unreadable"
