"""onnxruntime adapter: CPU execution provider (threads, spinning, graph optimisation), CUDA EP.

Options (``Measure.options``): ``provider`` ("cpu" default, or "cuda"), ``graph_optimization``
("all" default, "extended", "basic", "disable"), ``spinning`` (intra-op thread spinning,
default true as in onnxruntime), ``inter_op_threads`` (default 1), ``scope`` ("compute"
default: on CUDA, inputs stay on the GPU and outputs are bound there; "end_to_end": host
copies included, rule 14). Intra-op threads = the request's ``threads`` (rule 5).
"""
from __future__ import annotations

import re
import time

import numpy as np
import onnxruntime as ort

from agents.errors import BadRequest, RuntimeUnavailable
from agents.runtimes.base import (LoadFailure, OutOfMemory, Prepared, UnsupportedOp, count_option,
                                  external_data_failure, float_type, input_shapes, looks_like_oom,
                                  random_input, unfeedable_input, without_side_files)
from agents.runtimes.onnx_model import declared_dims, graph_inputs, read_model

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
              "tensor(uint64)": "uint64", "tensor(uint32)": "uint32", "tensor(uint16)": "uint16",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
KNOWN_OPTIONS = {"provider", "graph_optimization", "spinning", "inter_op_threads", "scope"}
SCOPES = ("compute", "end_to_end")
# What onnxruntime puts before the reason in a message: "/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(
# onnx::ModelProto&&, ...) Unsupported model IR version: 99"
SOURCE_LOCATION = re.compile(r"(?:/\S+/)?\w+\.(?:h|cc|cpp):\d+ ")
CPP_FUNCTION = re.compile(r"(?:[\w:<>*&]+ )*[\w<>~:]*::[\w<>~]+\(")
# Where onnxruntime >= 1.21 looks for the external data of a model given as bytes (older ones: the working directory)
EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


def session_options(threads: int, options: dict) -> ort.SessionOptions:
    level = options.get("graph_optimization", "all")
    if not isinstance(level, str) or level not in OPT_LEVELS:  # a list (an --option read as JSON) is unhashable
        raise BadRequest(f"onnxruntime option graph_optimization={level!r}; valid: {', '.join(OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = count_option(options, "inter_op_threads", default=1, runtime="onnxruntime")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = OPT_LEVELS[level]
    spin = "1" if options.get("spinning", True) else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3
    return so


def input_feeds(sess, request, data: bytes) -> dict[str, np.ndarray]:
    """Fixed-seed inputs, shaped by :func:`agents.runtimes.base.input_shapes`."""
    inputs = sess.get_inputs()
    for inp in inputs:
        if inp.type not in ONNX_TYPES:
            raise unfeedable_input(inp.name, inp.type)
    scalars = [inp.name for inp in inputs if not inp.shape]
    shapeless = _shapeless_inputs(data, scalars) if scalars else set()
    # onnxruntime gives a free dimension as its symbol's name, or None
    declared = [(inp.name, None if inp.name in shapeless else tuple(inp.shape)) for inp in inputs]
    shapes = input_shapes(declared, request.batch, tuple(request.input_shape))
    return {inp.name: random_input(shape, ONNX_TYPES[inp.type], request.seed + i)
            for i, (inp, shape) in enumerate(zip(inputs, shapes))}


def _shapeless_inputs(data: bytes, scalars: list[str]) -> set[str]:
    """The names of the graph inputs that declare no shape. onnxruntime gives such an input the shape [], a
    scalar's, and it was fed one (a Conv then failed at its first inference, a Relu was timed on one number), so the
    model is read for them, only when some input (of ``scalars``) has the shape []. That takes the onnx package,
    which `hwl deploy` does not install beside onnxruntime: without it such a model failed as "No module named
    'onnx'"."""
    try:
        model = read_model(data)
    except ModuleNotFoundError as exc:
        if exc.name != "onnx":
            raise
        names = ", ".join(repr(name) for name in scalars)
        raise LoadFailure(f"the model's input {names} has the shape [] to onnxruntime: a scalar, or no shape declared; "
                          "telling which needs the onnx package, which the agent's Python here lacks: install onnx "
                          "there (pip install onnx), or declare the input's shape in the model") from None
    return {name for name, dims in declared_dims(graph_inputs(model)) if dims is None}


def reason(exc: Exception) -> str:
    """onnxruntime's message without the C++ file, line and function signature it puts before the reason."""
    text = str(exc)
    location = SOURCE_LOCATION.search(text)
    if location is None:
        return text
    rest = text[location.end():]
    signature = CPP_FUNCTION.match(rest)
    if signature is None:
        return text[:location.start()] + rest
    depth, end = 1, signature.end()
    while end < len(rest) and depth:  # to the parenthesis that closes the argument list
        depth += {"(": 1, ")": -1}.get(rest[end], 0)
        end += 1
    return text[:location.start()] + rest[end:].removeprefix(" const").lstrip()


def _classify_load(exc: Exception) -> Exception:
    text = reason(exc)
    if "external data" in text.lower() or "filesystem error" in text:  # 1.21 and later; before
        return external_data_failure()
    if looks_like_oom(exc):
        return OutOfMemory(f"onnxruntime ran out of memory loading the model: {text}")
    if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text or "is not a registered function/op" in text:
        return UnsupportedOp(f"onnxruntime does not support an operator of this model: {text}")
    return LoadFailure(f"onnxruntime could not load the model: {text}")


def _session(data: bytes, so: ort.SessionOptions, provider: str) -> ort.InferenceSession:
    """A session of exactly ``data``. A model naming external data (weights in a side file) fails to load: the only
    folder onnxruntime may read it from is an empty one, since no hash covers such a file."""
    with without_side_files() as empty:
        so.add_session_config_entry(EXTERNAL_DATA_FOLDER, empty)
        try:
            return ort.InferenceSession(data, sess_options=so, providers=[provider])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
            raise _classify_load(exc) from None


def prepare(request, model, cache_dir=None) -> Prepared:
    options = dict(request.options)
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise BadRequest(f"unknown onnxruntime option(s) {', '.join(unknown)}; valid: {', '.join(sorted(KNOWN_OPTIONS))}")
    provider_key = options.get("provider", "cpu")
    if not isinstance(provider_key, str) or provider_key not in PROVIDERS:
        raise BadRequest(f"onnxruntime option provider={provider_key!r}; valid: {', '.join(PROVIDERS)}")
    provider = PROVIDERS[provider_key]
    if provider not in ort.get_available_providers():
        raise RuntimeUnavailable(f"onnxruntime here has no {provider}; available: {', '.join(ort.get_available_providers())}")
    scope = options.get("scope", "compute")
    if scope not in SCOPES:
        raise BadRequest(f"onnxruntime option scope={scope!r}; valid: {', '.join(SCOPES)}")
    if model is None:
        raise BadRequest("onnxruntime times an ONNX file: the request names none ('model' or 'sha256')")
    so = session_options(request.threads, options)
    sess = _session(model.data, so, provider)
    feeds = input_feeds(sess, request, model.data)
    meta = {"intra_op_threads": request.threads, "inter_op_threads": so.inter_op_num_threads,
            "spinning": bool(options.get("spinning", True)),
            "graph_optimization": options.get("graph_optimization", "all"), "scope": scope}
    shape = next(iter(feeds.values())).shape if feeds else ()
    if provider_key == "cpu" or scope == "end_to_end":  # on CPU both scopes are the same loop
        def block(k: int) -> int:
            run = sess.run
            t0 = time.perf_counter_ns()
            for _ in range(k):
                run(None, feeds)
            return time.perf_counter_ns() - t0
    else:
        # Compute scope (rule 14): inputs resident on the GPU, outputs left there, stream synced.
        binding = sess.io_binding()
        for name, arr in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda")

        def block(k: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in range(k):
                sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
            return time.perf_counter_ns() - t0
    dtype = float_type(ONNX_TYPES.get(x.type) for x in (*sess.get_inputs(), *sess.get_outputs()))
    return Prepared(block=block, runtime_version=ort.__version__, provider=provider, input_shape=tuple(shape),
                    on_gpu=provider_key == "cuda", dtype=dtype, metadata=meta)
