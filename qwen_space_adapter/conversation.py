"""The conversation object: what a caller keeps to continue a chat on the same Space session.

The Space keeps each session's task history on the server, keyed by the session hash, and the
browser keeps the chatbot value. A `JsonConversation` holds both halves that live on our side:
the session hash and the last chatbot value, plus where it belongs. It is plain data, so
`get_dict()` -> JSON -> `from_dict()` continues the conversation in another process.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from .errors import InvalidRequestError
from .options import parseable_url
from .target import space_url

CHAT_ROLES = ("user", "assistant", "system")

SESSION_HASH_RE = re.compile(r"^[0-9a-z]{6,64}$")


def generate_session_hash() -> str:
    """A fresh session hash: 12 lowercase hex characters from a uuid4, as the Space's web UI uses."""
    return uuid.uuid4().hex[:12]


class JsonConversation:
    """g4f-compatible conversation state: attributes from keyword arguments, `get_dict`, `from_dict`.

    Attributes the adapter sets: `session_hash`, `space` (the Space's URL), `model`, `chatbot` (the
    Space's last chatbot value), `message_count` (how many of the caller's messages the Space
    has seen, so that passing the grown `messages` list sends only the new message), `values`
    (the other component values the Space's page reads back, such as an agent selector) and
    `app_id` (the Space's app that holds the history: a restart changes it) and `pending_steps`
    (the fn indices of the steps the page runs after an answer that was stopped: the next turn
    runs them first, as the page ran them right after the stop).
    """

    session_hash: str
    space: str
    model: str
    chatbot: list[Any]
    message_count: int
    values: dict[str, Any]  # other component values the Space's page reads (an agent selector...)
    app_id: Any  # the Space's app that holds this conversation's history (changes on restart)
    pending_steps: list[int]  # steps the page runs after a stopped answer, run before the next turn
    closed: bool  # closed on the Space (`close_conversation`): it cannot be continued

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            _check_key(key)
            setattr(self, key, value)

    def get_dict(self) -> dict[str, Any]:
        """The conversation as JSON-ready data (no private attributes)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JsonConversation:
        """Rebuild a conversation from `get_dict()` output (after a JSON round trip, say)."""
        if not isinstance(data, dict):
            raise InvalidRequestError(f"JsonConversation.from_dict expects a dict, got {type(data).__name__}.")
        for key in data:
            _check_key(key)  # before `**`: a key that is not a string fails there with a TypeError
        return cls(**data)

    def __repr__(self) -> str:
        turns = len(getattr(self, "chatbot", None) or [])
        return (
            f"JsonConversation(session_hash={getattr(self, 'session_hash', None)!r}, "
            f"space={getattr(self, 'space', None)!r}, turns={turns})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonConversation) and other.get_dict() == self.get_dict()

    __hash__ = None  # type: ignore[assignment]


def _check_key(key: Any) -> None:
    """Refuse an attribute name that would replace the object's machinery rather than hold data.

    `from_dict` sets every key as an attribute: `__class__` would turn the object into another
    class, `__dict__` or `get_dict` would break it. Data keys are public names only.
    """
    if not isinstance(key, str) or not key.isidentifier():
        raise InvalidRequestError(
            f"A conversation's keys must be attribute names, got {key!r}; pass what get_dict() returned."
        )
    if (
        key.startswith("_")
        or callable(getattr(JsonConversation, key, None))
        or isinstance(getattr(JsonConversation, key, None), property)
    ):
        raise InvalidRequestError(
            f"A conversation cannot set {key!r}: names starting with '_' and the class's own methods "
            "are not data. Pass what get_dict() returned."
        )


def _check_chatbot(chatbot: list[Any]) -> None:
    """The chatbot must be one of the Space pages' formats: [user, bot] pairs (Gradio's tuples
    format, modelscope_studio's chatbots) or role/content message dicts (Gradio's messages format),
    not a mix. A malformed one used to fail on the Space, after the request, as a retried bug."""
    if all(isinstance(m, dict) for m in chatbot):
        for i, m in enumerate(chatbot):
            if m.get("role") not in CHAT_ROLES:
                raise InvalidRequestError(
                    f"conversation.chatbot[{i}] is a message without a role of {', '.join(CHAT_ROLES)} "
                    f"(got {m.get('role')!r}); pass the chatbot this adapter recorded."
                )
        return
    for i, entry in enumerate(chatbot):
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            raise InvalidRequestError(
                f"conversation.chatbot[{i}] is a {type(entry).__name__}, not a [user, bot] pair (nor are all "
                "entries role/content messages); pass the chatbot this adapter recorded."
            )


def check_chatbot_format(chatbot: Any, messages_format: bool) -> None:
    """Refuse a conversation's chatbot whose format is not the page's (`Page.messages_format`).

    `check_conversation` checks the shape at the call; the format the page uses is known once its
    config is read, and a chatbot of the other format must not be sent to it.
    """
    if not isinstance(chatbot, list) or not chatbot:
        return
    is_messages = all(isinstance(m, dict) for m in chatbot)
    if is_messages != messages_format:
        want = "role/content messages" if messages_format else "[user, bot] pairs"
        raise InvalidRequestError(
            f"conversation.chatbot holds {'messages' if is_messages else 'pairs'}, but the Space's page "
            f"keeps its chatbot as {want}: this conversation was not made on this page. Start a new "
            "conversation (conversation=None)."
        )


def check_conversation(conversation: Any, space: str | None = None) -> JsonConversation | None:
    """Validate a conversation passed back by a caller, before anything is sent.

    Accepts a `JsonConversation`, any object with `get_dict()` (g4f's own class), or a plain dict.
    A missing `chatbot` or `message_count` (a hand-made dict) counts as an empty one. When
    `space` (the URL the call resolved to) is given, the conversation must belong to that Space:
    its session lives there and nowhere else.
    """
    if conversation is None:
        return None
    if isinstance(conversation, dict):
        data = conversation
    elif callable(getattr(conversation, "get_dict", None)):
        data = conversation.get_dict()
        if not isinstance(data, dict):
            raise InvalidRequestError("conversation.get_dict() must return a dict.")
    else:
        raise InvalidRequestError(
            f"conversation must be a JsonConversation (or its get_dict()), got {type(conversation).__name__}."
        )
    session_hash = data.get("session_hash")
    if not isinstance(session_hash, str) or not SESSION_HASH_RE.match(session_hash):
        raise InvalidRequestError(
            "conversation.session_hash must be 6-64 lowercase letters and digits, as made by "
            "generate_session_hash(); pass the conversation object this adapter yielded."
        )
    chatbot = data.get("chatbot")
    if chatbot is None:
        chatbot = []
    if not isinstance(chatbot, list):
        raise InvalidRequestError("conversation.chatbot must be a list (the Space's chatbot value).")
    _check_chatbot(chatbot)
    count = data.get("message_count", 0)
    if count is None:
        count = 0
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidRequestError("conversation.message_count must be a non-negative integer.")
    values = data.get("values")
    if values is not None and (
        not isinstance(values, dict) or not all(isinstance(k, str | int) and not isinstance(k, bool) for k in values)
    ):
        raise InvalidRequestError(
            "conversation.values must be a dict from component ids to values (as recorded), got "
            f"{type(values).__name__}."
        )
    app_id = data.get("app_id")
    if app_id is not None and (isinstance(app_id, bool) or not isinstance(app_id, int | str)):
        raise InvalidRequestError(
            f"conversation.app_id must be the Space's app id (a number or a string), got {type(app_id).__name__}."
        )
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError(f"conversation.model must be a model name, got {type(model).__name__}.")
    owner = data.get("space")
    if owner is not None and not isinstance(owner, str):
        raise InvalidRequestError(f"conversation.space must be the URL of its Space, got {type(owner).__name__}.")
    if owner is not None:
        parseable_url(owner, "conversation.space")
    if owner is not None and space is not None and space_url(owner, "conversation.space") != space:
        raise InvalidRequestError(
            f"This conversation belongs to the Space at {owner}, not {space}; start a new "
            "conversation (conversation=None), or leave space= out to continue it on its own Space."
        )
    if isinstance(conversation, JsonConversation):
        conversation.chatbot = chatbot
        conversation.message_count = count
        return conversation
    for key in data:
        _check_key(key)
    return JsonConversation(**{**data, "chatbot": chatbot, "message_count": count})
