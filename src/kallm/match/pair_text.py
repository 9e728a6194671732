"""What the pair model reads of two prompts: all of both when they fit its window, otherwise
the part where they differ.

Two long prompts that share most of their words ("Here is my order history... Can I return
the blender?" against the same with "the toaster") differ in a clause that a sentence
embedding barely notices and a fixed-size window may cut off. Cutting the shared beginning
and end, keeping a few words around the difference, puts that clause in front of the model
however long the prompts are. Training (`training/train.py`) uses this same function, so the
model sees at run time what it learned on.

Pure and standard-library only, so the training environment imports it as it is.
"""

from __future__ import annotations

WINDOW = 256  # word pieces of "[CLS] cached [SEP] asked [SEP]" the model reads
# Texts that together run past this many characters are not read at all: the model could
# not see them whole, and an unread difference must never be served.
MAX_CHARS = 8 * WINDOW * 4
FITS = 150  # words of both texts together that surely fit the window as they are
CONTEXT = 8  # shared words kept on each side of the difference
ELIDED = "..."


def pair_input(cached: str, asked: str) -> tuple[str, str] | None:
    """The two texts as the model reads them, or None when they are too long to read."""
    if len(cached) + len(asked) > MAX_CHARS:
        return None
    a, b = cached.split(), asked.split()
    if len(a) + len(b) <= FITS:
        return cached, asked
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    start = max(0, prefix - CONTEXT)
    a_end, b_end = len(a) - max(0, suffix - CONTEXT), len(b) - max(0, suffix - CONTEXT)
    return _span(a, start, a_end), _span(b, start, b_end)


def _span(words: list[str], start: int, end: int) -> str:
    head = [ELIDED] if start > 0 else []
    tail = [ELIDED] if end < len(words) else []
    return " ".join(head + words[start:end] + tail)
