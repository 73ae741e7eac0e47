"""What `manage.py warm_cache` reads and shows: inputs from a text, JSONL or JSON-list file, and a progress
bar drawn on stderr with plain characters (no dependency)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

ITEM_FIELDS = {"text", "messages", "options", "lens"}


@dataclass
class Item:
    where: str  # "line 3" or "item 3": how errors name it
    input: dict  # {"text": ...} or {"messages": [...]}
    options: dict = field(default_factory=dict)
    lens: str | None = None


class Malformed(ValueError):
    pass


def _item(where: str, obj) -> Item:
    if isinstance(obj, str):
        return Item(where, {"text": obj})
    if not isinstance(obj, dict):
        raise Malformed(f"expected a text or an object, got {type(obj).__name__}")
    unknown = set(obj) - ITEM_FIELDS
    if unknown:
        raise Malformed(
            f"unknown field(s) {', '.join(sorted(unknown))}; expected text or messages, options, lens"
        )
    if ("text" in obj) == ("messages" in obj):
        raise Malformed('give either "text" or "messages"')
    options = obj.get("options") or {}
    if not isinstance(options, dict):
        raise Malformed('"options" must be an object')
    lens = obj.get("lens")
    if lens is not None and not isinstance(lens, str):
        raise Malformed('"lens" must be a lens id')
    data = {"text": obj["text"]} if "text" in obj else {"messages": obj["messages"]}
    return Item(where, data, options, lens)


def read_items(content: str) -> tuple[list[Item], list[tuple[str, str]]]:
    """(items, [(where, what is wrong)]). A JSON list when the file starts with "["; else one input per
    line: a line starting with "{" is a JSON object, any other non-blank line is a text."""
    items, bad = [], []
    if content.lstrip().startswith("["):
        try:
            values = json.loads(content)
        except ValueError as exc:
            return [], [("file", f"not a valid JSON list: {exc}")]
        for n, value in enumerate(values, 1):
            try:
                items.append(_item(f"item {n}", value))
            except Malformed as exc:
                bad.append((f"item {n}", str(exc)))
        return items, bad
    for n, line in enumerate(content.splitlines(), 1):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            if text.lstrip().startswith("{"):
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    raise Malformed(f"not valid JSON: {exc}") from None
                items.append(_item(f"line {n}", value))
            else:
                items.append(Item(f"line {n}", {"text": text}))
        except Malformed as exc:
            bad.append((f"line {n}", str(exc)))
    return items, bad


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class Progress:
    """`[#####-----] 5/10 50% · 4 computed · 1 failed · 0:12 elapsed · ETA 0:12`: redrawn in place on a
    terminal, one line per change otherwise (logs, tests)."""

    WIDTH = 30

    def __init__(self, stream, total: int):
        self.stream, self.total = stream, total
        self.started = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.computed = self.failed = 0
        self.fraction = 0.0  # of the item in progress (--local: positions done so far)

    @property
    def done(self) -> int:
        return self.computed + self.failed

    def line(self) -> str:
        progress = min(self.total, self.done + self.fraction)
        share = progress / self.total if self.total else 1.0
        filled = int(self.WIDTH * share)
        elapsed = time.monotonic() - self.started
        eta = clock(elapsed / progress * (self.total - progress)) if progress else "?"
        return (
            f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {self.done}/{self.total} {share:4.0%} · "
            f"{self.computed} computed · {self.failed} failed · {clock(elapsed)} elapsed · ETA {eta}"
        )

    def draw(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()
        else:
            self.stream.write(self.line() + "\n")

    def say(self, text: str) -> None:
        """A message above the bar."""
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        if self.tty:
            self.draw()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
