"""Parse an architecture selection: ``all``, ``random:N``, a comma list (NB201 ranges ``A-B`` in it), or ``@FILE``."""
from __future__ import annotations

import re
from pathlib import Path

from spaces import fbnet, nb201
from spaces.columns import PAIRED_COLUMNS, check_same_archs
from spaces.errors import ArchError


def arch_file(spec) -> Path | None:
    """The file an ``@FILE`` selection names (None for any other selection): commands that write
    files check their outputs against it before any work."""
    text = spec.strip() if isinstance(spec, str) else ""
    return Path(text[1:]).expanduser() if text.startswith("@") else None  # no shell expands '@~/archs.txt'


def resolve_archs(space: str, spec: str | list[str], *, seed: int = 0) -> list:
    """Architectures named by ``spec`` in ``space``.

    NB201 gives official indices (int); FBNet gives canonical arch keys (str). Order is kept,
    duplicates are dropped. An NB201 item ``A-B`` is the indices A..B, both included. ``spec``
    may also be a list of keys (the CLI's positional args).
    """
    return _resolve(space, spec, seed, hint=True)


def _resolve(space: str, spec, seed: int, *, hint: bool) -> list:
    if space not in ("nb201", "fbnet"):
        raise ArchError(f"unknown search space {space!r}; valid spaces: nb201, fbnet")
    if isinstance(spec, (list, tuple)):
        items = [str(s) for s in spec]
    else:
        text = spec.strip()
        if text == "all":
            if space == "fbnet":
                raise ArchError("'all' is only defined for nb201 (FBNet has 9^22 architectures); use random:N")
            return list(range(nb201.N_ARCHS))
        if text.startswith("random:"):
            n_text = text.split(":", 1)[1]
            if not n_text.isdigit():
                raise ArchError(f"random:N needs a positive integer N, got {text!r}")
            return (nb201.sample if space == "nb201" else fbnet.sample)(int(n_text), seed)
        path = arch_file(text)
        if path is not None:
            if not text[1:].strip():  # `--archs @$FILE` with FILE unset: the path would be '.'
                raise ArchError("'@' names no file: give @FILE, a file with one architecture per line")
            if path.is_dir():
                raise ArchError(f"architecture file {path} is a folder; give @FILE, a file with one architecture "
                                "per line")
            if not path.exists():  # a pipe is fine: --archs @<(hwl space sample ...)
                raise ArchError(f"architecture file {path} does not exist")
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()  # a Windows editor's byte-order mark
            except (OSError, UnicodeDecodeError) as exc:
                raise ArchError(f"architecture file {path} cannot be read as text: {exc}") from None
            # a comment may follow an architecture too ('5  # the fastest'): no key holds a '#'
            items = [item for ln in lines if (item := ln.split("#", 1)[0].strip())]
            if not items:  # "the architecture selection is empty" named no file
                raise ArchError(f"architecture file {path} names no architecture (it is empty, or holds comments "
                                "only)")
            if space == "nb201":
                try:
                    items = _index_of_listed_pairs(items)
                except ArchError as exc:
                    raise ArchError(f"architecture file {path}: {exc}") from None
        elif space == "nb201" and "|" in text:
            items = [text]  # one arch string: its commas are not separators
        elif space == "fbnet":
            items = _split_fbnet_list(text)
        else:
            items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise ArchError("the architecture selection is empty")
    items = _expand_ranges(space, items)
    resolve = nb201.resolve if space == "nb201" else fbnet.canonical
    out, seen = [], set()
    for item in items:
        try:
            _refuse_a_word(space, str(item), in_a_selection=not isinstance(spec, (list, tuple)))
            key = resolve(item)
        except ArchError as exc:
            raise ArchError(f"{exc}{_other_space_hint(space, spec) if hint else ''}") from None
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _index_of_listed_pairs(lines: list[str]) -> list[str]:
    """NB201 lines as `hwl space list` and `hwl space sample nb201` print them (``INDEX,ARCH_STR``, under an
    ``arch_index,arch_str`` header, or a one-column table's) as their index, once both are seen to name one cell:
    the file ``hwl space sample nb201 --n 100 > archs.txt`` writes was refused ('node 1 ... must look like')."""
    if lines and lines[0].replace(" ", "") in (*PAIRED_COLUMNS["nb201"], ",".join(PAIRED_COLUMNS["nb201"])):
        lines = lines[1:]
    pairs = {}  # position -> (index, arch string)
    for i, line in enumerate(lines):
        index, comma, string = line.partition(",")
        if comma and index.strip().isdigit() and "|" in string:
            pairs[i] = (int(index), string.strip())
    if pairs:
        check_same_archs("nb201", [p[0] for p in pairs.values()], [p[1] for p in pairs.values()])
    return [str(pairs[i][0]) if i in pairs else line for i, line in enumerate(lines)]


def _refuse_a_word(space: str, item: str, *, in_a_selection: bool) -> None:
    """ArchError for an item that cannot be an architecture of ``space`` at all (``rand:3``, ``archs.txt``
    without its ``@``): the parser's own complaint ('needs 3 nodes', '22 layers') sent users looking in the
    wrong place."""
    text = item.strip()
    if space == "nb201" and ("|" in text or text.lstrip("-").isdigit()):
        return
    if space == "fbnet" and ("," in text or text.replace("_", "").isdigit()):
        return
    what = ("neither an NB201 index nor an arch string" if space == "nb201" else
            "no FBNet key (22 comma-separated op names, or op indices joined by '_')")
    if not in_a_selection:  # one architecture (hwl measure --arch, hwl export's arguments)
        raise ArchError(f"{text!r} is {what}")
    choices = "all, random:N, indices, ranges A-B, arch strings" if space == "nb201" else "random:N, keys"
    file_hint = f"; {text} is a file: give @{text}" if text and Path(text).is_file() else ""
    raise ArchError(f"{text!r} is {what}; a selection is {choices} or @FILE{file_hint}")


def _other_space_hint(space: str, spec) -> str:
    """Why a selection failed when it is the other space's: FBNet keys given for an NB201 model, NB201
    indices for FBNet (else the error is about a piece of it, as 'needs 3 nodes ... in k5_e6')."""
    other = "fbnet" if space == "nb201" else "nb201"
    try:
        _resolve(other, spec, 0, hint=False)
    except ArchError:
        return ""
    return f" (the selection names {other} architectures, not {space} ones)"


# An inclusive index range; NB201 arch strings and FBNet keys never match it (no bare digits-dash-digits).
_RANGE = re.compile(r"(\d+)\s*-\s*(\d+)")


def _expand_ranges(space: str, items: list) -> list:
    """``items`` with each ``A-B`` replaced by the NB201 indices A..B (inclusive)."""
    out = []
    for item in items:
        match = _RANGE.fullmatch(str(item).strip())
        if match is None:
            out.append(item)
            continue
        text = str(item).strip()
        if space != "nb201":  # FBNet architectures have keys, not indices
            raise ArchError(f"range {text!r}: ranges A-B name NB201 indices; FBNet architectures are given "
                            "as keys, random:N or @FILE")
        low, high = int(match[1]), int(match[2])
        if low > high:
            raise ArchError(f"range {text!r} runs backwards; write {high}-{low}")
        if high >= nb201.N_ARCHS:
            raise ArchError(f"range {text!r} goes past the last NB201 index: valid indices are 0..{nb201.N_ARCHS - 1}")
        out.extend(range(low, high + 1))
    return out


def _split_fbnet_list(text: str) -> list[str]:
    """FBNet keys contain commas, so a list is ';'-separated, comma-separated op-index keys
    (``7_8_1_...,3_4_...``), or op names whose count is a multiple of 22."""
    if ";" in text:
        return [t for t in text.split(";") if t.strip()]
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if all("_" in p and p.replace("_", "").isdigit() for p in parts):
        return parts
    if len(parts) % fbnet.N_LAYERS == 0:
        n = fbnet.N_LAYERS
        return [",".join(parts[i:i + n]) for i in range(0, len(parts), n)]
    return [text]  # let fbnet.parse name the problem (wrong layer count, unknown op)
