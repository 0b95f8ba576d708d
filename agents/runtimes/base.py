"""What every runtime adapter returns, and the typed failures it raises.

An adapter module (``agents.runtimes.<name>``) has ``prepare(request, model, cache_dir)``
returning a :class:`Prepared`; ``model`` is an :class:`agents.verified.VerifiedFile` (the bytes whose
sha256 the request named: run those, never reopen its path) or None. Loading, compiling and the first
allocation happen in ``prepare`` (timed as ``init_ms``); ``block(k)`` runs k inferences and returns elapsed ns.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from agents.errors import BadRequest, HwlError


class RunFailure(HwlError):
    """A model failed in a way that becomes a typed outcome of its record."""

    outcome = "runtime_error"


class LoadFailure(RunFailure):
    outcome = "load_error"


class UnsupportedOp(RunFailure):
    outcome = "unsupported_op"


class CompileFailure(RunFailure):
    outcome = "compile_error"


class OutOfMemory(RunFailure):
    outcome = "oom"


@dataclass
class Prepared:
    """A loaded model, ready to time.

    Attributes
    ----------
    block : callable
        ``block(k) -> ns``: k back-to-back inferences, synchronised.
    runtime_version, provider, build_hash : str
    input_shape : tuple of int
        Shape of the (first) input actually fed.
    on_gpu : bool
    dtype : str
        The model's floating-point type (see :func:`float_type`); "" for the request's.
    metadata : dict
        Runtime settings worth keeping (threads, spinning, opt level, compile_ms...).
    first : callable, optional
        ``first() -> ns`` of the first inference, when ``block(1)`` cannot time it (TVM).
    timing : callable, optional
        ``timing(policy, on_window, *, seconds_left, on_leftovers) -> agents.timing.Timing`` for runtimes
        that do not time blocks themselves (the command runtime); ``seconds_left()`` is the time left before
        the per-model limit, and ``on_leftovers(list)`` is told the processes it killed once a run left them.
    close : callable, optional
    on_window : callable, optional
        ``on_window(phase)`` as each phase of :func:`agents.timing.time_blocks` starts ("warmup", "window <i>"),
        before its clock does: TVM drops there the blocks its last timer call timed in the phase before.
    """

    block: Callable[[int], int] | None
    runtime_version: str
    provider: str = "CPUExecutionProvider"
    build_hash: str = ""
    input_shape: tuple = ()
    on_gpu: bool = False
    dtype: str = ""
    metadata: dict = field(default_factory=dict)
    timing: Callable | None = None
    first: Callable[[], int] | None = None
    close: Callable[[], None] | None = None
    on_window: Callable[[str], object] | None = None


def unfeedable_input(name: str, type_name: str) -> UnsupportedOp:
    """The one-line refusal of a model input of a type the agent draws no random values of (``type_name`` as
    onnxruntime writes it: "seq(tensor(float))", "tensor(string)")."""
    return UnsupportedOp(f"input {name!r} has type {type_name}, which the agent cannot feed")


def external_data_failure() -> LoadFailure:
    """The one-line refusal of a model whose tensors lie in files beside it (ONNX external data)."""
    return LoadFailure("the model keeps tensor data in files beside it (ONNX external data), which the agent does "
                       "not read: its sha256 covers the .onnx file alone. Save the model as one file, e.g. "
                       "onnx.save_model(onnx.load('model.onnx'), 'whole.onnx') (up to 2 GB)")


@contextlib.contextmanager
def without_side_files():
    """A new empty folder (yielded) as the working directory while a runtime loads a model from bytes: the
    runtime looks for the model's external data there (onnxruntime before 1.21 and ONNX look in the working
    directory), and no hash covers a file it would find beside the agent."""
    # fchdir back works even if that folder was renamed meanwhile; O_PATH (Linux) needs no read permission on it
    home = os.open(".", getattr(os, "O_PATH", os.O_RDONLY))
    try:
        with tempfile.TemporaryDirectory(prefix="hwl-no-side-files-") as empty:
            os.chdir(empty)
            try:
                yield empty
            finally:
                os.fchdir(home)
    finally:
        os.close(home)


# Runtime options that count something, and their smallest value (harness.profiles checks them too).
COUNT_OPTION_MINIMUM = {"inter_op_threads": 1, "warmup_runs": 0}


def count_option(options: dict, key: str, *, default: int, runtime: str) -> int:
    """A runtime option that counts something (threads, runs): a whole number >= its minimum, else
    BadRequest (the runtimes took any number: onnxruntime ran with -3 inter-op threads)."""
    value, minimum = options.get(key, default), COUNT_OPTION_MINIMUM[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"{runtime} option {key}={value!r}; must be a whole number >= {minimum}")
    return value


def input_shapes(inputs, batch: int, input_shape: tuple = ()) -> list[tuple]:
    """The shape to feed each model input, from ``(name, dims)`` pairs whose free dimensions are their symbol's name
    (``"seq"``) or None; ``dims`` is None for an input that declares no shape (not even its rank).

    The first input takes ``input_shape`` when the request gives one; a free dimension then takes the size its
    symbol has there (ids and mask, both ``[N, seq]``, get the same seq), a free leading dimension the batch. Any
    other free dimension is refused: it ran at the batch size (a ``[N, seq]`` model at seq 1, an image model at
    1x1 pixels) under a record like any other. So is an input without a shape that ``input_shape`` does not give:
    onnxruntime fed it a scalar.
    """
    if input_shape and not inputs:
        raise BadRequest(f"input_shape {list(input_shape)} is for the model's first input, and it has none")
    if not inputs and batch != 1:  # its record said batch 8 for a model of constants, which no batch size changes
        raise BadRequest(f"the model has no inputs, so no batch size changes what it runs: ask for batch 1, not "
                         f"{batch} ({_asking_for(1)})")
    if inputs and inputs[0][1] and _is_fixed(inputs[0][1][0]) and inputs[0][1][0] != batch:
        # the model's batch is fixed: timing it under another batch size labelled the record with a batch
        # it never ran (hwl measure --batch 8 on a batch-1 export said batch 8, input_shape [1, ...])
        fixed = inputs[0][1][0]
        raise BadRequest(f"the model's input {inputs[0][0]!r} has batch size {fixed}, not the request's {batch}: "
                         f"ask for batch {fixed} ({_asking_for(fixed)}), or export the model at batch size {batch}")
    sizes = _sizes_from_request(*inputs[0], batch, tuple(input_shape)) if input_shape else {}
    shapes = [tuple(input_shape)] if input_shape else []
    for name, dims in inputs[len(shapes):]:
        if dims is None:
            raise _shapeless(name, inputs[0][0], batch)
        shape = []
        for axis, dim in enumerate(dims):
            if _is_fixed(dim) or (dim is not None and dim in sizes):
                shape.append(dim if _is_fixed(dim) else sizes[dim])
            elif axis == 0:
                shape.append(batch)
                if dim is not None:
                    sizes[dim] = batch
            else:
                raise _unsized(name, dim, axis, inputs[0], batch)
        shapes.append(tuple(shape))
    return shapes


def _shapeless(name: str, first: str, batch: int) -> BadRequest:
    """The refusal of an input that declares no shape, which only a request's ``input_shape`` can give."""
    what = f"the model's input {name!r} declares no shape"
    if name != first:
        return BadRequest(f"{what}, and input_shape is the first input's: export the model with its shape declared")
    return BadRequest(f"{what}: give its whole shape as input_shape (hwl measure --input-shape {batch},3,224,224 for "
                      "an image, say)")


def _unsized(name: str, dim, axis: int, first: tuple, batch: int) -> BadRequest:
    """The refusal of a free dimension no size was given for, with the ``input_shape`` to give."""
    what = f"the model's input {name!r} has a free dimension {dim or '?'} (axis {axis})"
    if name != first[0]:
        return BadRequest(f"{what}, which only this input has, so no input_shape can size it: export the model with "
                          "it fixed")
    example = ",".join(str(d) if _is_fixed(d) else str(batch) if i == 0 else str(d or "?")
                       for i, d in enumerate(first[1]))
    return BadRequest(f"{what}: give its whole shape with the sizes you mean as input_shape (hwl measure "
                      f"--input-shape {example})")


def _is_fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _sizes_from_request(name: str, dims: tuple, batch: int, input_shape: tuple) -> dict:
    """The sizes the request's ``input_shape`` gives the first input's free dimensions, by symbol."""
    if dims is None:  # no declared shape: input_shape is all of it
        check_batch_of(input_shape, batch)
        return {}
    if len(dims) != len(input_shape):
        raise BadRequest(f"input_shape {list(input_shape)} has {len(input_shape)} dimensions, the model's input "
                         f"{name!r} {len(dims)}: {list(dims)}")
    for axis, (dim, size) in enumerate(zip(dims, input_shape)):
        if _is_fixed(dim) and dim != size:  # onnxruntime failed at its first inference; TVM timed the size asked for
            raise BadRequest(f"input_shape {list(input_shape)} gives axis {axis} size {size}, but the model's input "
                             f"{name!r} fixes it at {dim}: {list(dims)}")
    if dims and not _is_fixed(dims[0]):
        check_batch_of(input_shape, batch)
    # a free dimension without a name has no size anywhere else; None is no symbol
    return {dim: size for dim, size in zip(dims, input_shape) if dim is not None and not _is_fixed(dim)}


def check_batch_of(input_shape: tuple, batch: int) -> None:
    """BadRequest for an ``input_shape`` whose leading (batch) size is not the request's batch: the record would say
    a batch the model never ran at."""
    if input_shape[0] != batch:
        raise BadRequest(f"input_shape {list(input_shape)} says batch {input_shape[0]}, the request batch {batch}: "
                         f"ask for batch {input_shape[0]} too ({_asking_for(input_shape[0])})")


def _asking_for(batch: int) -> str:
    """How a user asks for ``batch``: the hint said 'ask for batch 8' and named no flag or key that does."""
    return f"hwl measure --batch {batch}; a profile's batch_size = {batch}"


def float_type(dtypes) -> str:
    """A model's floating-point type for its record: its first floating-point input's, else output's (numpy names,
    inputs first); a model with none, its first input's or output's type; "" when it has neither. An fp16 model was
    recorded as the request's default float32, and so was an integer model (uint8 in and out) still."""
    dtypes = [d for d in dtypes if d]
    return next((d for d in dtypes if _is_float(np.dtype(d))), dtypes[0] if dtypes else "")


def _is_float(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a floating-point type: numpy's, or ml_dtypes' (bfloat16, float8_*), which ONNX gives for
    those types and numpy calls kind "V" (a bfloat16 model's record said float32, its input drawn as 0 or 1)."""
    return dtype.kind == "f" or dtype.name.startswith(("bfloat", "float"))


_DRAW_CHUNK = 1 << 20  # elements of an input drawn at a time (8 MiB of float64)


def random_input(shape, dtype: str, seed: int) -> np.ndarray:
    """Fixed-seed random tensor (rule 15): normal floats; integers and booleans 0 or 1.

    Integer inputs are mostly indices into a table (token ids, BERT's token types into a table of 2 rows) or masks:
    0 and 1 are in every table of two rows or more, where 0-7 failed onnxruntime's Gather on a 2-row table and made
    TVM's (which checks no bounds) read past it."""
    rng = np.random.default_rng(seed)
    out = np.empty(shape, np.dtype(dtype))
    flat = out.reshape(-1)
    # drawn in chunks into the tensor itself: the same values as one draw of the whole shape (the generator's stream
    # is sequential), without the whole-size float64 or int64 draw beside it (3x a float32 input's size at its peak)
    for start in range(0, flat.size, _DRAW_CHUNK):
        n = min(_DRAW_CHUNK, flat.size - start)
        flat[start:start + n] = rng.standard_normal(n) if _is_float(out.dtype) else rng.integers(0, 2, size=n)
    return out


_OOM_MARKERS = ("out of memory", "failed to allocate", "bad_alloc", "cannot allocate memory")


def looks_like_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(m in text for m in _OOM_MARKERS)
