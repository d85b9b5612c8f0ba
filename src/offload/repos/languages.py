"""Languages for `lang:`: Pygments' table of lexers, their names, aliases and file name globs.

Sourcegraph answers `lang:` from GitHub's linguist table; Pygments (installed with Rich) keeps
a table of the same kind, so `lang:HCL`, `lang:Dockerfile` or `lang:shell` mean what they mean
there without offload keeping a list of its own. Names match case-insensitively.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from pygments.lexers import get_all_lexers  # type: ignore[import-untyped]

# Files linguist counts in a language whose Pygments lexer does not list them.
_EXTRA_GLOBS = {"Terraform": ("*.tfvars",), "TypeScript": ("*.mts", "*.cts")}


@dataclass(frozen=True)
class Language:
    """One language: its name in the table and the file name globs that stand for it."""

    name: str
    globs: tuple[str, ...]

    def path_regex(self) -> re.Pattern[str]:
        """Matches the paths of this language's files (by the file's name, in any directory).

        Globs match in any case (`*.go` finds `MAIN.GO`), except where another language spells
        the same glob with other capitals: C's `*.c` and C++'s `*.C` match as written.
        """
        exact: list[str] = []
        folded: list[str] = []
        for glob in self.globs:
            (exact if glob in _case_sensitive_globs() else folded).append(_glob_regex(glob))
        parts = [f"(?:{'|'.join(exact)})"] if exact else []
        if folded:
            parts.append(f"(?i:{'|'.join(folded)})")
        return re.compile(rf"(?:^|/)(?:{'|'.join(parts)})$")


class UnknownLanguage(LookupError):
    """A `lang:` value the table does not know, with the closest names it does."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.suggestions = suggestions


def language(name: str) -> Language:
    """The language called `name` (a name or alias, any case); UnknownLanguage if none."""
    found = _table().get(_key(name))
    if found is None:
        close = difflib.get_close_matches(_key(name), list(_table()), n=3, cutoff=0.75)
        raise UnknownLanguage(name, close)
    return found


def language_names() -> list[str]:
    """Every name and alias `lang:` accepts, in lower case, sorted."""
    return sorted(_table())


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@functools.cache
def _table() -> dict[str, Language]:
    """Each accepted spelling -> its language; a spelling of several lexers merges their globs."""
    globs_by_key: dict[str, dict[str, None]] = {}
    name_by_key: dict[str, str] = {}
    for name, aliases, filenames, _ in get_all_lexers():
        globs = [*filenames, *_EXTRA_GLOBS.get(name, ())]
        lowered = name.lower()
        spellings = {lowered, lowered.replace(" ", "-"), lowered.replace(" ", ""), *aliases}
        for spelling in spellings:
            key = _key(spelling)
            name_by_key.setdefault(key, name)
            globs_by_key.setdefault(key, {}).update(dict.fromkeys(globs))
    return {key: Language(name_by_key[key], tuple(globs)) for key, globs in globs_by_key.items()}


@functools.cache
def _case_sensitive_globs() -> frozenset[str]:
    """Globs another lexer spells with other capitals (C's `*.c`, C++'s `*.C`)."""
    spellings: dict[str, set[tuple[str, str]]] = {}
    for name, _, filenames, _ in get_all_lexers():
        for glob in filenames:
            spellings.setdefault(glob.lower(), set()).add((name, glob))
    return frozenset(
        glob
        for owners in spellings.values()
        for name, glob in owners
        if any(other != name and spelled != glob for other, spelled in owners)
    )


def _glob_regex(glob: str) -> str:
    """A file name glob (*, ?, [...]) as a regular expression over one path segment."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := glob.find("]", i + 2)) > 0:
            body = glob[i + 1 : close]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append(f"[{'^' if negate else ''}{_class_body(body)}]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_body(body: str) -> str:
    return "".join("\\" + c if c in "\\^]" else c for c in body)


__all__ = ["Language", "UnknownLanguage", "language", "language_names"]
