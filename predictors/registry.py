"""Method name -> class, so the CLI and benchmarks can name methods (``--method NAME``).

Register a method with one line in ``METHODS``; ``RECOMMENDED`` is what runs without
``--method``.
"""
from __future__ import annotations

import importlib

from harness.errors import UserError

# name -> "module:Class", imported on use (torch-based methods stay out of `hwl --help`).
METHODS: dict[str, str] = {
    "simple_reference": "predictors.baselines.simple_reference:SimpleReference",
    "copy": "predictors.baselines.copy_device:CopyBaseline",
    "hwl_ridge": "predictors.baselines.hwl_ridge:HWLRidge",
    "flops": "predictors.baselines.cost_proxy:FlopsBaseline",
    "params": "predictors.baselines.cost_proxy:ParamsBaseline",
    "phys_bayes": "predictors.recommended:PhysBayes",
    "tl_et": "predictors.transfer:TransferLearning",
    "help": "predictors.help:HELP",
}

RECOMMENDED = "phys_bayes"

# Baselines whose predictions rank architectures but are not the device's latency in ms (another
# device's latency, a FLOP or parameter count): fine for a rank correlation, not for a latency table.
RANK_ONLY = ("copy", "flops", "params")


class UnknownMethodError(UserError):
    """A method name that is not registered; the message lists the valid names."""


def method_names() -> list[str]:
    return list(METHODS)


def latency_methods() -> list[str]:
    """The methods that predict a device's latency in ms (all but ``RANK_ONLY``): what a latency table, a
    latency limit or an onboarding needs."""
    return [m for m in METHODS if m not in RANK_ONLY]


def get_class(name: str, *, latency_only: bool = False):
    """The class registered under ``name``. ``latency_only``: an unknown name's message lists only the methods a
    command that writes or checks latencies in ms takes (it refuses ``RANK_ONLY`` ones)."""
    if name not in METHODS:
        valid = latency_methods() if latency_only else METHODS
        raise UnknownMethodError(f"unknown method {name!r}; valid methods: {', '.join(valid)}")
    module, _, cls = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def chosen(name: str | None) -> str:
    """The method a ``--method`` names: the recommended one for None (the flag not given). An empty name
    (``--method "$METHOD"`` with METHOD unset) is a wrong name, refused as one, not the default."""
    return RECOMMENDED if name is None else name


def method_arg(text: str) -> str:
    """An argparse ``type`` for a benchmark's ``--method``: a registered name, else argparse's one-line error. The
    flag's default (None, the recommended method) never reaches it; ``--method ''`` does and is refused."""
    import argparse

    try:
        get_class(chosen(text))
    except UnknownMethodError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def get_method(name: str | None = None, **params):
    """A new, unfitted method; ``None`` gives the recommended one. ``params`` go to its constructor."""
    cls = get_class(chosen(name))
    try:
        return cls(**params)
    except TypeError as exc:
        raise UnknownMethodError(f"method {name!r} does not take {sorted(params)}: {exc}") from None


__all__ = ["METHODS", "RANK_ONLY", "RECOMMENDED", "UnknownMethodError", "chosen", "get_class", "get_method",
           "latency_methods", "method_arg", "method_names"]
