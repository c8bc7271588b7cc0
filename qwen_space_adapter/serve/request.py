"""Parsing and checking a `POST /v1/chat/completions` body, before anything reaches the Space.

The result is plain data: the messages as text (the shape the adapter takes), the attachments
as decoded bytes, and the streaming options. Everything a client can get wrong is an `ApiError`
(400) naming the field, so an OpenAI SDK shows a message that says what to fix. Fields OpenAI
clients send that the Space has no setting for (`temperature`, `max_tokens`, ...) and fields this
parser does not know are accepted and ignored: clients add fields faster than servers learn them,
and refusing them would lock those clients out. What would change the meaning of the answer
(`n > 1`, tools) is refused by name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

MAX_BODY_BYTES = 64 * 1024 * 1024  # base64 of the adapter's 16 MB attachment limit, plus room for text
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
DATA_URL = re.compile(r"^data:([^,;]*)((?:;[^,;]*)*?);base64,(.*)$", re.DOTALL)
REFUSED = {
    "tools": "tools (function calling): the Space answers with text only",
    "functions": "functions (function calling): the Space answers with text only",
    "audio": "audio output: the Space answers with text only",
}


@dataclass(frozen=True)
class Attachment:
    """A document from a `file` content part: its name and its bytes (checked by the adapter)."""

    filename: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Message:
    """One message as the Space sees it: role (system, user, assistant), text, attachments."""

    role: str
    content: str
    files: tuple[Attachment, ...] = ()

    def canonical(self) -> list[Any]:
        """What identifies the message for session matching: the files by content, not by encoding."""
        return [self.role, self.content, [[f.filename, f.digest] for f in self.files]]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    ignored: tuple[str, ...] = field(default=())  # the knobs accepted without effect (for the log)


def _bad(message: str, param: str | None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def parse_body(raw: bytes) -> ChatRequest:
    """Decode and check a request body; an `ApiError` names what is wrong."""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"The request body is over {MAX_BODY_BYTES:,} bytes.", code="request_too_large")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"The request body is not valid JSON: {e}.", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None)
    return parse_request(body)


def parse_request(body: dict[str, Any]) -> ChatRequest:
    """Check a decoded body (see the module's docstring for what is accepted, ignored, refused)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model is required: a model id from GET /v1/models.", "model")
    for name, why in REFUSED.items():
        if body.get(name):
            raise _bad(f"{name} is not supported: {why}.", name, "unsupported_parameter")
    tool_choice = body.get("tool_choice")
    if tool_choice not in (None, "none"):
        raise _bad(
            "tool_choice is not supported: the Space answers with text only.", "tool_choice", "unsupported_parameter"
        )
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise _bad("n must be a positive integer.", "n")
    if n is not None and n > 1:
        raise _bad("n > 1 is not supported: the Space gives one answer per question.", "n", "unsupported_parameter")
    modalities = body.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or set(modalities) - {"text"}):
        raise _bad("modalities other than 'text' are not supported.", "modalities", "unsupported_parameter")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options must be an object.", "stream_options")
    include_usage = bool(options.get("include_usage", False))
    messages = _messages(body.get("messages"))
    known = {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "tools",
        "functions",
        "tool_choice",
        "audio",
        "modalities",
    }
    return ChatRequest(model, messages, stream, include_usage, tuple(sorted(set(body) - known)))


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _bad("messages must be a non-empty list of {role, content} objects.", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{where} must be an object with role and content.", where)
        role = m.get("role")
        if role in ("tool", "function"):
            raise _bad(
                f"{where} has role {role!r}: tool results are not supported (the Space has no tools).",
                f"{where}.role",
                "unsupported_parameter",
            )
        if role not in ROLES:
            raise _bad(f"{where} has role {role!r}; use system, developer, user or assistant.", f"{where}.role")
        if m.get("tool_calls") or m.get("function_call"):
            raise _bad(
                f"{where} has tool calls: not supported (the Space has no tools).",
                f"{where}.tool_calls",
                "unsupported_parameter",
            )
        text, files = _content(m.get("content"), f"{where}.content")
        if files and ROLES[role] != "user":
            raise _bad(f"{where}: only user messages can attach files.", f"{where}.content")
        out.append(Message(ROLES[role], text, files))
    if out[-1].role != "user":
        raise _bad(
            f"The last message (messages[{len(out) - 1}]) must be the user's: that is what the Space answers.",
            f"messages[{len(out) - 1}].role",
        )
    return tuple(out)


def _content(value: Any, where: str) -> tuple[str, tuple[Attachment, ...]]:
    if value is None:
        return "", ()
    if isinstance(value, str):
        return value, ()
    if not isinstance(value, list):
        raise _bad(f"{where} must be a string or a list of content parts.", where)
    texts: list[str] = []
    files: list[Attachment] = []
    for j, part in enumerate(value):
        here = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "file":
            files.append(_file(part.get("file"), f"{here}.file"))
        elif kind in ("image_url", "input_image", "image"):
            raise _bad(
                f"{here} is an image: the Space reads text only (attach UTF-8 text documents as "
                "{'type': 'file', ...} parts).",
                here,
                "unsupported_content",
            )
        elif kind in ("input_audio", "audio"):
            raise _bad(f"{here} is audio: the Space reads text only.", here, "unsupported_content")
        else:
            raise _bad(
                f"{here} must be a {{'type': 'text', 'text': ...}} or {{'type': 'file', 'file': "
                "{'filename', 'file_data'}} part.",
                here,
            )
    return "\n".join(texts), tuple(files)


def _file(value: Any, where: str) -> Attachment:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object with filename and file_data.", where)
    if value.get("file_id"):
        raise _bad(
            f"{where}.file_id: uploaded file ids are not supported; send the document inline as file_data.",
            f"{where}.file_id",
            "unsupported_content",
        )
    data_url = value.get("file_data")
    if not isinstance(data_url, str):
        raise _bad(f"{where}.file_data must be a base64 data URL (data:text/plain;base64,...).", f"{where}.file_data")
    match = DATA_URL.match(data_url)
    if not match:
        raise _bad(f"{where}.file_data must be a base64 data URL (data:text/plain;base64,...).", f"{where}.file_data")
    mime = match.group(1).lower()
    if mime.startswith(("image/", "audio/", "video/")) or mime == "application/pdf":
        raise _bad(f"{where} is {mime}: the Space reads UTF-8 text documents only.", where, "unsupported_content")
    try:
        data = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}.file_data is not valid base64.", f"{where}.file_data") from None
    name = value.get("filename") or "document.txt"
    if not isinstance(name, str):
        raise _bad(f"{where}.filename must be a string.", f"{where}.filename")
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".") or "document.txt"
    if "\x00" in name or len(name.encode()) > 200:
        raise _bad(f"{where}.filename is not a usable file name.", f"{where}.filename")
    return Attachment(name, data)


__all__ = ["MAX_BODY_BYTES", "Attachment", "ChatRequest", "Message", "parse_body", "parse_request"]
