"""Command templates: a command line (or a list of words) whose placeholders are filled in per model.

A placeholder (``{model}``, ``{sha256}``, ``{threads}``, ...) in an ordinary word is replaced by its value as it
is: no shell reads the word, so it reaches the program as one argument whatever the value holds. In the script a
shell runs (``sh -c SCRIPT``, ``bash -ec SCRIPT``, ...) a value is read as shell code: a model path with a space
was split in two, and one holding ``;`` or ``$(...)`` ran what followed. There each placeholder is filled
shell-quoted (:func:`shlex.quote`), so its value stays one word and runs nothing. Inside quotes the script writes
itself (``"{model}"``) those quotes would become part of the path, so a placeholder whose value may hold any
character (``{model}``) is refused there: it is written bare. The other values (hex digits, whole numbers, a
comma list of them) are the same quoted or not, so they may stand anywhere.

A program that hands its words to a shell of its own (``adb shell``, ``ssh``) is not recognised: there the value
of ``{model}`` is passed as it is, so a device's copy is named by ``{sha256}``.
"""
from __future__ import annotations

import os
import re
import shlex

from agents.errors import BadRequest

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash"})
FREE_TEXT = frozenset({"model"})  # placeholders whose value may hold any character
_SCRIPT_OPTION = re.compile(r"-[A-Za-z]*c[A-Za-z]*")  # -c, -ec, -xc...: the next word is the script


def build_argv(template, values: dict) -> list[str]:
    """Split the template and fill the known placeholders (shell-quoted in a shell's script); other braces stay
    as written, so inline code such as ``python -c "print({'a': 1})"`` needs no escaping.

    Raises
    ------
    BadRequest
        Not a template, or a free-text placeholder inside quotes in a shell's script.
    """
    if not isinstance(template, (str, list, tuple)) or not template:
        raise BadRequest(f"command template must be a non-empty string or list of words, got {template!r}")
    words = shlex.split(template) if isinstance(template, str) else [str(w) for w in template]
    pattern = re.compile("{(" + "|".join(map(re.escape, values)) + ")}")
    scripts = shell_scripts(words)
    for i in scripts:
        _refuse_quoted_free_text(words[i], pattern)
    return [pattern.sub(lambda m: _filled(values[m.group(1)], quote=i in scripts), word)
            for i, word in enumerate(words)]


def _filled(value, *, quote: bool) -> str:
    return shlex.quote(str(value)) if quote else str(value)


def shell_scripts(words: list[str]) -> set[int]:
    """Where in ``words`` a shell's script is: the word after the ``-c`` of sh, bash, ... (the words after the
    script are its arguments, ``$0``, ``$1``..., which no shell reads again)."""
    found = set()
    for i, word in enumerate(words):
        if os.path.basename(word) not in SHELLS:
            continue
        for j in range(i + 1, len(words) - 1):
            if _SCRIPT_OPTION.fullmatch(words[j]):
                found.add(j + 1)
                break
            if not words[j].startswith(("-", "+")) and words[j - 1] not in ("-o", "+o"):
                break  # a script file: its arguments are no shell code
    return found


def _refuse_quoted_free_text(script: str, pattern: re.Pattern) -> None:
    """BadRequest for a free-text placeholder inside '...' or "..." of the script (see the module docstring)."""
    quote, i = None, 0
    while i < len(script):
        char = script[i]
        if char == "\\" and quote != "'":
            i += 2  # an escaped character neither opens nor closes a quote
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        elif quote and (m := pattern.match(script, i)) and m.group(1) in FREE_TEXT:
            raise BadRequest(
                f"command template: {m.group(0)} stands inside quotes in the shell script {script!r}; hwl fills "
                "a placeholder there shell-quoted (a path with a space, a quote or ';' stays one word and runs "
                f"nothing), so write it without the quotes around it: {m.group(0)}")
        i += 1
