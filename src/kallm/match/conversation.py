"""Whether two conversations' earlier turns mean the same: the part of a multi-turn hit that
the final prompt's decision does not cover.

Both histories are reduced to their turns that can change the answer, then aligned in
order, turn for turn: user turns and assistant turns must each be judged the same by the
decision that judges final prompts (`Judge`), and a turn that is not plain text (a tool
call or result, an image) must be the same exactly. A turn that only acknowledges
("thanks!", "ok great") is dropped with the assistant's reply to it, since it cannot change
the request; a short answer to a question ("yes", "no", "the second one") is never one.
Decisions only: the caller supplies the judgements. The server does not call this yet:
`eval/conversations_report.py` measures it first (issue 13).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kallm.match.canonical import canonical, exact_form


@dataclass(frozen=True)
class Turn:
    """One earlier message: its role, its text when it is plain text (else None), and its
    exact form (what must be equal when it is not plain text)."""

    role: str
    text: str | None
    exact: str


# Acknowledgements that ask nothing and answer nothing. Deliberately short: a turn that is
# not on this list is compared, so a missing entry costs a hit, never a right answer.
_ACK_WORDS = (
    r"ok(ay)?|k|cool|great|nice|perfect|awesome|thanks?( you)?|thx|ty|so much|a lot|got it|"
    r"gotcha|sounds good|makes sense|understood|alright|all right|hmm+|oh"
)
_ACK = re.compile(rf"({_ACK_WORDS})([\s,!.]+({_ACK_WORDS}))*[\s,!.]*", re.IGNORECASE)


def is_acknowledgement(text: str) -> bool:
    return _ACK.fullmatch(canonical(text).strip()) is not None


def essential(turns: Sequence[Turn]) -> list[Turn]:
    """The turns that can change the answer: each user acknowledgement is dropped with the
    assistant turn that replies to it."""
    kept: list[Turn] = []
    skip_reply = False
    for turn in turns:
        if turn.role == "user" and turn.text is not None and is_acknowledgement(turn.text):
            skip_reply = True
            continue
        if skip_reply and turn.role == "assistant":
            skip_reply = False
            continue
        skip_reply = False
        kept.append(turn)
    return kept


# Judges whether a cached turn's text and an asked turn's text mean the same.
Judge = Callable[[str, str], Awaitable[bool]]


def aligned(cached: Sequence[Turn], asked: Sequence[Turn]) -> list[tuple[Turn, Turn]] | None:
    """The essential turns of both histories paired in order, or None when they cannot
    correspond (other numbers of turns, other roles in order, a non-text turn not equal)."""
    ours, theirs = essential(cached), essential(asked)
    if len(ours) != len(theirs):
        return None
    pairs = list(zip(ours, theirs, strict=True))
    for a, b in pairs:
        if a.role != b.role or (a.text is None) != (b.text is None):
            return None
        if a.text is None and a.exact != b.exact:
            return None
    return pairs


async def same_history(
    cached: Sequence[Turn], asked: Sequence[Turn], judge: Judge, limit: int
) -> bool:
    """Whether the asked history means what the cached one does. Past `limit` compared turns
    only an exactly equal history counts."""
    pairs = aligned(cached, asked)
    if pairs is None:
        return False
    for a, b in pairs:
        if a.text is None or exact_form(canonical(a.text)) == exact_form(canonical(b.text or "")):
            continue
        if len(pairs) > limit or not await judge(a.text, b.text or ""):
            return False
    return True
