"""Search spaces: NAS-Bench-201 and FBNet keys, samplers, encodings and (lazily) torch builders.

Importing ``spaces`` needs only numpy; the torch network builders live in
``spaces.nb201_net`` and ``spaces.fbnet_net`` and are imported on demand.
"""
from spaces import fbnet, nb201
from spaces.errors import ArchError
from spaces.selection import resolve_archs

SPACES = {"nb201": nb201, "fbnet": fbnet}


def get_space(name: str):
    """The space module for a name; raises ArchError listing the valid names."""
    try:
        return SPACES[name]
    except KeyError:
        raise ArchError(f"unknown search space {name!r}; valid spaces: {', '.join(SPACES)}") from None


__all__ = ["ArchError", "SPACES", "fbnet", "get_space", "nb201", "resolve_archs"]
