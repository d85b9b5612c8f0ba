"""Redaction: secrets never leave the executor, even printed in pieces across lines."""

from __future__ import annotations

from collections.abc import Mapping

# Output lines carry a stream prefix; a secret printed in pieces spans consecutive payloads.
PREFIXES = ("stdout: ", "stderr: ")
MIN_HELD = 4


class Redactor:
    """Replaces every secret value by its placeholder in commands and output."""

    def __init__(self, values: Mapping[str, str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.values = sorted(((v, r) for v, r in values.items() if v), key=lambda vr: -len(vr[0]))

    def text(self, text: str) -> str:
        """`text` with every secret replaced, also one split across line breaks."""
        if not self.values:
            return text
        for value, replacement in self.values:
            text = text.replace(value, replacement)
        if "\n" not in text:
            return text
        return self._across_lines(text)

    def settled(self, text: str) -> str:
        """The part of still-growing output that is safe to send now.

        Trailing lines that might be the start of a secret still being printed are held back
        until more output (or the end of the command) shows what they are.
        """
        if not self.values or not text:
            return text
        lines = text.split("\n")
        payloads = [
            line[next((len(p) for p in PREFIXES if line.startswith(p)), 0) :] for line in lines
        ]
        joined = "".join(payloads)
        longest = 0
        for value, _ in self.values:
            for size in range(min(len(value) - 1, len(joined)), longest, -1):
                if joined.endswith(value[:size]):
                    longest = size
                    break
        # A few characters that happen to begin a secret reveal nothing (and ordinary output
        # ends that way all the time): hold back only what could be a real piece of one.
        if longest < MIN_HELD:
            return text
        # Find the line where the held-back tail begins, and send only what comes before it.
        remaining = longest
        keep = len(lines)
        while remaining > 0 and keep > 0:
            keep -= 1
            remaining -= len(payloads[keep])
        return "\n".join(lines[:keep]) + ("\n" if keep else "")

    def words(self, words: list[str]) -> list[str]:
        """Each word of a command, redacted."""
        return [self.text(word) for word in words]

    def _across_lines(self, text: str) -> str:
        lines = text.split("\n")
        starts: list[int] = []
        payloads: list[str] = []
        for line in lines:
            cut = next((len(p) for p in PREFIXES if line.startswith(p)), 0)
            starts.append(cut)
            payloads.append(line[cut:])
        joined = "".join(payloads)
        if not any(value in joined for value, _ in self.values):
            return text  # the usual case, found without mapping every character
        owner: list[tuple[int, int]] = []  # joined index -> (line, column)
        for number, payload in enumerate(payloads):
            owner.extend((number, starts[number] + col) for col in range(len(payload)))
        masked: dict[int, list[tuple[int, str | None]]] = {}
        for value, replacement in self.values:
            at = joined.find(value)
            while at >= 0:
                spots = owner[at : at + len(value)]
                for index, (number, column) in enumerate(spots):
                    # The placeholder goes where the secret began; its other characters vanish.
                    masked.setdefault(number, []).append(
                        (column, replacement if index == 0 else None)
                    )
                at = joined.find(value, at + len(value))
        if not masked:
            return text
        for number, edits in masked.items():
            chars: list[str] = list(lines[number])
            for column, put in edits:
                chars[column] = put if put is not None else ""
            lines[number] = "".join(chars)
        return "\n".join(lines)
