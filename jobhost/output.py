"""Turn the bytes a run writes into log lines that cannot break a JSON stream.

Bytes are decoded as UTF-8 incrementally (a character split across reads is
kept whole); invalid bytes become ``\\xNN`` escapes; a line longer than
`max_chars` is cut into pieces of that size, so one huge line cannot hold the
whole stream or exceed what a log shipper accepts. A last line without a
newline is still emitted when the stream ends.
"""

from __future__ import annotations

import codecs

MAX_LINE_CHARS = 32 * 1024


class LineSplitter:
    """Feed it bytes; it returns complete lines (without the newline)."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS):
        self.max_chars = max_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        self._pending += self._decoder.decode(data)
        return self._take_lines()

    def finish(self) -> list[str]:
        """Flush what is left when the stream has ended."""
        self._pending += self._decoder.decode(b"", final=True)
        lines = self._take_lines()
        if self._pending:
            lines.append(self._pending)
            self._pending = ""
        return lines

    def _take_lines(self) -> list[str]:
        lines: list[str] = []
        *complete, self._pending = self._pending.split("\n")
        for line in complete:
            lines.extend(self._cut(line.removesuffix("\r")))
        while len(self._pending) >= self.max_chars:
            lines.append(self._pending[: self.max_chars])
            self._pending = self._pending[self.max_chars :]
        return lines

    def _cut(self, line: str) -> list[str]:
        if len(line) <= self.max_chars:
            return [line]
        return [line[i : i + self.max_chars] for i in range(0, len(line), self.max_chars)]
