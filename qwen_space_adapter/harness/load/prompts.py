"""What a load run sends: prompt sets from JSONL, or generated prompts with a long document attached."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import InvalidRequestError


@dataclass(frozen=True)
class Prompt:
    """One user message and the text files attached to it."""

    text: str
    files: tuple[str, ...] = ()


def load_prompts(path: str | os.PathLike[str], *, allow_outside: bool = False) -> list[Prompt]:
    """Prompts from a JSONL file: one `{"prompt": "...", "files": ["doc.txt"]}` per line.

    Relative file paths are read relative to the JSONL file, so a prompt set can travel with
    its documents. Every file is checked once here, so a bad one stops the run before it starts.
    A file outside the JSONL file's folder (an absolute path, `../`, a symlink out) is refused
    unless `allow_outside` (`--allow-files-outside-prompts-dir`): a prompt set from elsewhere
    must not be able to upload `~/.ssh/id_rsa` to a Space.
    """
    from ...options import check_file

    p = Path(path)
    folder = p.parent.resolve()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"Cannot read the prompts file {str(p)!r}: {e}") from e
    prompts: list[Prompt] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"{p}:{number}: not JSON ({e.msg}).") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise InvalidRequestError(f'{p}:{number}: expected {{"prompt": "text", "files": [paths]}}.')
        files = obj.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise InvalidRequestError(f"{p}:{number}: 'files' must be a list of paths.")
        resolved = tuple(str(f if Path(f).is_absolute() else p.parent / f) for f in files)
        for given, f in zip(files, resolved, strict=True):
            if not allow_outside and not Path(f).resolve().is_relative_to(folder):
                raise InvalidRequestError(
                    f"{p}:{number}: the file {given!r} is outside the prompt set's folder {str(folder)!r} "
                    f"(it is {str(Path(f).resolve())!r}); a prompt set uploads only its own documents. Move "
                    "the file next to the prompts file, or pass --allow-files-outside-prompts-dir "
                    "(allow_outside=True) if you mean to upload it."
                )
            check_file(f)
        prompts.append(Prompt(obj["prompt"], resolved))
    if not prompts:
        raise InvalidRequestError(f"The prompts file {str(p)!r} holds no prompt.")
    return prompts


FILLER = (
    "The quarterly report lists every shipment, its route, its weight in kilograms and the day it "
    "arrived; the notes below repeat the figures so that the reader can check them. "
)


def make_document(path: str | os.PathLike[str], chars: int) -> str:
    """Write a UTF-8 text document of `chars` characters (a long report) and return its path."""
    reps, rest = divmod(chars, len(FILLER))
    Path(path).write_text(FILLER * reps + FILLER[:rest], encoding="utf-8")
    return str(path)


def generated_prompts(
    lengths: Sequence[int], document_chars: int = 0, directory: str | os.PathLike[str] | None = None
) -> list[Prompt]:
    """Prompts of the given lengths in characters, each with a document of `document_chars` attached.

    A long attached document is what makes the Space's prefill (its "thinking") long, so the
    load can include that case; the document is written once into `directory`.
    """
    if not lengths or any(n < 1 for n in lengths):
        raise InvalidRequestError("prompt lengths must be positive numbers of characters.")
    files: tuple[str, ...] = ()
    if document_chars:
        if directory is None:
            raise InvalidRequestError("a generated document needs a directory to be written to.")
        files = (make_document(Path(directory) / f"document-{document_chars}.txt", document_chars),)
    head = "Summarise these notes in three sentences. " if files else "Answer in three sentences. "
    out = []
    for n in lengths:
        body = head + (FILLER * (n // len(FILLER) + 1))
        out.append(Prompt(body[:n].rstrip() or "Hi", files))
    return out
