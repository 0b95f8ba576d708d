"""PyTorch eager adapter, for models given as an architecture key rather than a file.

``Measure.arch`` is ``{"space": "nb201"|"fbnet", "key": <index, arch string or FBNet key>,
"dataset": <optional>}`` (built with ``spaces.nb201_net`` / ``spaces.fbnet_net``, which need
the ``spaces`` package beside ``agents`` on the device) or ``{"factory": "module:function"}``,
a function returning an ``nn.Module`` (its input shape must then be in ``input_shape``).
Options: ``device`` ("cpu" default, or "cuda"), ``scope`` ("compute" default; "end_to_end"
copies the input to the device and the output back inside each inference, rule 14),
``cuda_graph`` (false default): capture the forward pass once as a CUDA graph and time its
replays. At batch 1 eager PyTorch on a fast GPU times mostly Python's kernel launches (an H200
gave batch 32 only 1.2x batch 1's latency); a replayed graph launches once, so the label follows
the GPU's own work, as a deployment runtime's would. The capture is part of load (rule 9).
Threads: ``torch.set_num_threads(threads)``, one inter-op thread. On CUDA every block ends
with ``torch.cuda.synchronize()`` (rule 13).
"""
from __future__ import annotations

import importlib
import time

import torch

from agents.errors import BadRequest, RuntimeUnavailable
from agents.runtimes.base import LoadFailure, Prepared, check_batch_of, random_input

KNOWN_OPTIONS = {"device", "scope", "cuda_graph"}
SCOPES = ("compute", "end_to_end")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_module(arch: dict, batch: int, input_shape: tuple) -> tuple[torch.nn.Module, tuple]:
    """The module and its input shape for an ``arch`` dict (see the module docstring)."""
    if "factory" in arch:
        mod_name, _, func = str(arch["factory"]).partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), func)
        except (ImportError, AttributeError) as exc:
            raise LoadFailure(f"torch factory {arch['factory']!r} cannot be imported: {exc}") from None
        if not input_shape:
            raise BadRequest("torch with arch.factory needs 'input_shape'")
        return factory(), tuple(input_shape)
    space, key, dataset = arch.get("space"), arch.get("key"), arch.get("dataset")
    if space not in ("nb201", "fbnet") or key is None:
        raise BadRequest(f"torch arch must be {{'space': 'nb201'|'fbnet', 'key': ..., 'dataset': ...}} "
                         f"or {{'factory': 'module:function'}}; got {arch!r}")
    try:
        from spaces.cost import input_shape as shape_of
        if space == "nb201":
            from spaces.nb201_net import build_nb201 as build
        else:
            from spaces.fbnet_net import build_fbnet as build
    except ImportError as exc:
        raise RuntimeUnavailable(f"torch models from architecture keys need the 'spaces' package on the "
                                 f"device: {exc}") from None
    if input_shape:  # an NCHW image: --input-shape 2,3,64,64 --batch 5 ran batch 2 under a record of batch 5
        check_batch_of(tuple(input_shape), batch)
    try:
        module = build(key, dataset)
        shape = tuple(input_shape) if input_shape else shape_of(space, dataset, batch)
    except Exception as exc:  # spaces.errors.ArchError and friends: the key is wrong
        raise BadRequest(f"cannot build {space} architecture {key!r}: {exc}") from None
    return module, shape


def capture_graph(module: torch.nn.Module, x: torch.Tensor):
    """``module(x)`` captured as a CUDA graph; returns its replay. x stays the graph's input."""
    side = torch.cuda.Stream()  # capture needs warmed-up kernels, run off the default stream
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(side):
        for _ in range(3):
            module(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.inference_mode(), torch.cuda.graph(graph):
            module(x)
    except RuntimeError as exc:  # an op that syncs with the host or allocates dynamically
        raise LoadFailure(f"torch could not capture this model as a CUDA graph: {exc}") from None
    return graph.replay


def prepare(request, model, cache_dir=None) -> Prepared:
    options = dict(request.options)
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise BadRequest(f"unknown torch option(s) {', '.join(unknown)}; valid: {', '.join(sorted(KNOWN_OPTIONS))}")
    if model is not None or not request.arch:
        raise BadRequest("the torch runtime measures a model given as 'arch' (an architecture key), "
                         "not a file; use onnxruntime or tvm for ONNX files")
    device = options.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        raise BadRequest(f"torch option device={device!r}; valid: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeUnavailable("torch option device='cuda' but torch sees no CUDA device here")
    scope = options.get("scope", "compute")
    if scope not in SCOPES:
        raise BadRequest(f"torch option scope={scope!r}; valid: {', '.join(SCOPES)}")
    cuda_graph = options.get("cuda_graph", False)
    if not isinstance(cuda_graph, bool):
        raise BadRequest(f"torch option cuda_graph={cuda_graph!r}; valid: true, false")
    if cuda_graph and (device != "cuda" or scope != "compute"):
        raise BadRequest(f"torch option cuda_graph=true needs device='cuda' and scope='compute' "
                         f"(got device={device!r}, scope={scope!r}): a graph holds GPU work only")
    if request.dtype not in DTYPES:
        raise BadRequest(f"torch dtype {request.dtype!r}; valid: {', '.join(DTYPES)}")
    torch.set_num_threads(request.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    torch.manual_seed(request.seed)
    module, shape = build_module(request.arch, request.batch, tuple(request.input_shape))
    dtype = DTYPES[request.dtype]
    module = module.eval().to(device=device, dtype=dtype)
    x_host = torch.from_numpy(random_input(shape, "float32", request.seed)).to(dtype=dtype)
    x = x_host.to(device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    end_to_end = scope == "end_to_end" and device != "cpu"
    forward = capture_graph(module, x) if cuda_graph else (lambda: module(x))

    def block(k: int) -> int:
        with torch.inference_mode():
            t0 = time.perf_counter_ns()
            for _ in range(k):
                if end_to_end:
                    module(x_host.to(device)).cpu()
                else:
                    forward()
            if sync is not None:
                sync()
            return time.perf_counter_ns() - t0

    meta = {"torch_threads": torch.get_num_threads(), "device": device, "scope": scope, "cuda_graph": cuda_graph,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
            "n_params": int(sum(p.numel() for p in module.parameters()))}
    provider = "cudagraph-cuda" if cuda_graph else f"eager-{device}"
    return Prepared(block=block, runtime_version=torch.__version__, provider=provider,
                    input_shape=tuple(shape), on_gpu=device == "cuda", metadata=meta)


__all__ = ["build_module", "prepare"]
