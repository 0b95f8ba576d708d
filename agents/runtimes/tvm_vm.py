"""Apache TVM adapter: ONNX -> Relax (``tvm.relax.frontend.onnx.from_onnx``) -> ``tvm.compile``
-> shared library, run by ``tvm.relax.VirtualMachine`` and timed with TVM's own
``time_evaluator`` (its device timer; rule 13).

Compiling happens in ``prepare`` (its time is ``metadata.compile_ms``, never in a timed window)
and the library is cached in ``<cache_dir>/tvm/<build hash>.so``, where the build hash covers
the model's sha256, the target, the TVM version and the input shapes a model with a free dimension was built for
(rule 24). A library there is loaded (which runs
its code) only from a folder no other user may write and while its bytes hash as recorded at its
build (``<build hash>.so.sha256``); without a cache the agent builds in a private temporary folder. A library is
read once: those bytes are hashed, scanned and loaded (from a private copy), so a file replaced meanwhile never is.
:func:`build_library` does the same on a build host for another device, e.g.
``llvm -mtriple=aarch64-linux-gnu`` with a cross ``cc``; the device then gets ``options.library`` (a
prebuilt file) and needs no ONNX or LLVM. TVM itself is imported only past every refusal that needs none of it (a
request that does not fit the model, an opset newer than onnx knows, threads a shipped library cannot use): its
import took 4-5 s on a 2-core machine, and every such refusal came after it.

Options: ``target`` (string or dict, default "llvm"), ``opt_level`` (0-3, TVM's PassContext
level, default 3), ``library`` (prebuilt library path; then ``input_shape`` and ``dtype``
describe the single input) with ``library_sha256`` (its sha256 as built: a library without one, or whose bytes
differ, is refused, as loading it runs its code), ``cc`` (compiler for exporting the library), ``tuned`` (default
false; true means the library is MetaSchedule-tuned, which is an opt-in build step on a build
host, minutes per model, see :func:`build_library`: the agent then needs ``library`` or
``library_dir`` and never tunes inside a measurement), ``library_dir`` (a folder on the device of libraries
prebuilt per model, ``<model sha256>.so`` each with its ``.so.sha256``, written by scripts/build_tvm_libraries on
a build host: how a campaign over many models runs tuned TVM; the input comes from the model as for a build),
``schedule`` (the agent's own build: "none", default, or "dlight" / "ms-sample", see SCHEDULES; in the build hash).
Threads: the parent sets ``TVM_NUM_THREADS`` to the request's ``threads`` before TVM starts. Only a kernel with a
parallel loop uses TVM's thread pool, and TVM's default CPU build (untuned) schedules no loop, so its libraries run
on one thread whatever that says: a request for more threads than one is refused for a library without a parallel
loop (a MetaSchedule-tuned one has them), rather than recorded at a thread count it did not use (rules 1, 5).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from agents.errors import BadRequest
from agents.runtimes.base import (CompileFailure, LoadFailure, Prepared, UnsupportedOp, check_batch_of, float_type,
                                  random_input, without_side_files)
from agents.runtimes.onnx_model import declared_dims, graph_inputs, onnx_inputs, output_dtypes, read_model
from agents.verified import is_sha256, private_copy, read_verified

log = logging.getLogger(__name__)
KNOWN_OPTIONS = {"target", "library", "library_sha256", "library_dir", "cc", "tuned", "opt_level", "schedule"}
DEFAULT_OPT_LEVEL = 3
# What build_library may schedule an untuned build with: "none" is TVM's default CPU pipeline (no kernel scheduled);
# "dlight" adds TVM's search-free CPU rules (tvm.s_tir.dlight.cpu), which give kernels a parallel outer loop but
# measured twice as slow at one thread on NB201 (scripts/bench_tvm --schedules), so the agent builds with "none";
# "ms-sample" is one draw from MetaSchedule's CPU design space per kernel, nothing built or timed (3-4x faster than
# "none" on NB201, but 4-5x the compile time and it needs the tuner's apache-tvm-ffi pin, so it is opt-in: options
# schedule, or scripts/build_tvm_libraries --schedule on a build host).
SCHEDULES = ("none", "dlight", "ms-sample")
# apache-tvm-ffi releases whose MetaSchedule segfaults (hwl's pyproject.toml pins 0.1.14): refused in one line.
BROKEN_TUNER_FFI = ("0.1.15",)
EVALUATOR_CHUNK = 4  # blocks per time_evaluator call: each call also runs one discarded warm call
# What a compiled kernel with a parallel loop calls to run it on TVM's thread pool: a library that never names it
# uses one thread.
PARALLEL_LAUNCH = b"TVMBackendParallelLaunch"


def _target(spec):
    """``spec`` as a ``tvm.target.Target``; BadRequest naming what a target is where it is none."""
    import tvm
    try:
        return tvm.target.Target(spec)
    except Exception as exc:
        raise BadRequest(f"TVM target {spec!r} is not valid ({exc}); use e.g. 'llvm' or "
                         f"{{'kind': 'llvm', 'mtriple': 'aarch64-linux-gnu'}}") from None


def build_hash(model_sha256: str, target, opt_level: int = DEFAULT_OPT_LEVEL, schedule: str = "none",
               shapes=None) -> str:
    """Content address of a compiled library: model bytes + target + opt level + schedule + TVM version, and
    ``shapes``, the input shapes it was built for, where the model leaves a dimension free (the batch of a model
    exported with a free one): a library is compiled for one shape and refuses another, and a library built at
    batch 1 was loaded for batch 8 under the same hash. Neither the default schedule nor a model's own fixed shapes
    add a key, so libraries cached before either existed are still found."""
    import tvm
    key = {"model": model_sha256, "target": str(target), "opt_level": opt_level, "tvm": tvm.__version__}
    if schedule != "none":
        key["schedule"] = schedule
    if shapes is not None:
        key["shapes"] = [list(shape) for shape in shapes]
    key = json.dumps(key, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _with_declared_shape(onnx_model, input_shape: tuple):
    """The model with ``input_shape``, the shape its first input is fed, declared there where that input declares
    none: onnx.checker, which a build runs first, refuses a graph input without a shape ("Field 'shape' of 'type' is
    required but missing"). A copy; the model itself is left as it is."""
    import onnx
    inputs = graph_inputs(onnx_model)
    if not input_shape or not inputs or inputs[0].type.WhichOneof("value") != "tensor_type" \
            or inputs[0].type.tensor_type.HasField("shape"):
        return onnx_model
    declared = onnx.ModelProto()
    declared.CopyFrom(onnx_model)
    first = next(x for x in declared.graph.input if x.name == inputs[0].name)
    first.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=n) for n in input_shape)
    return declared


def _built_shapes(onnx_model, inputs) -> list[tuple] | None:
    """The shapes ``inputs`` (of :func:`onnx_inputs`) gave a model that leaves a dimension free, which a build
    fixes (so they belong in its :func:`build_hash`); None for a model that fixes every dimension itself."""
    declared = declared_dims(graph_inputs(onnx_model))
    if all(dims is not None and all(isinstance(d, int) for d in dims) for _, dims in declared):
        return None
    return [shape for _, shape, _ in inputs]


def _dlight_pipeline(target):
    """TVM's CPU pipeline (relax.backend.cpu_generic) with dlight's CPU rules applied to the fused kernels; those
    no rule matches stay as the plain pipeline leaves them."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
    from tvm.s_tir import dlight

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(
                cpu_generic.library_dispatch_passes(target) + cpu_generic.legalize_passes(target)
                + [dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction())]
                + cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target))(mod)
    return pipeline


def _check_tuner_ffi(what: str) -> None:
    import tvm_ffi
    version = getattr(tvm_ffi, "__version__", "")
    if version.startswith(BROKEN_TUNER_FFI):
        raise BadRequest(f"{what} runs MetaSchedule, which segfaults with apache-tvm-ffi {version}; install "
                         "apache-tvm-ffi 0.1.14 on the build host (pip install 'apache-tvm-ffi>=0.1.14,<0.1.15', "
                         "as hwl's install pins it)")


def _import_tensor_intrinsics() -> None:
    """Import TVM's tensor intrinsics (every target's), as MetaSchedule's TuneContext does, in seconds rather than
    minutes. Each of their ~500 TVMScript functions calls ``inspect.stack()``, which asks ``inspect.getmodule`` for
    every frame; inside an import many frames are ``<frozen importlib._bootstrap>``, a file name no module carries,
    so each ask scans all of sys.modules (about 2,000 beside torch and onnx). That import took 90-120 s on a loaded
    2-core machine, past the agent's 120 s per-model limit, so an ``ms-sample`` build timed out; with inspect told
    which modules those frames are in (what its scan cannot match) it takes about 20 s. The frames' file names and
    their (absent) source lines come out as before."""
    import inspect
    known = getattr(inspect, "modulesbyfile", None)
    if isinstance(known, dict):  # inspect's own cache, undocumented: a Python without it only imports slowly
        for name in ("importlib._bootstrap", "importlib._bootstrap_external"):
            known.setdefault(f"<frozen {name}>", name)
    importlib.import_module("tvm.s_tir.tensor_intrin")


def _sampled_schedule_pipeline(target, seed: int = 1):
    """MetaSchedule's CPU design space without search: for each fused kernel one draw of its space (tiling,
    parallel, vectorize, unroll; a fixed seed, so the same model gives the same library) with its postprocessors,
    applied from an in-memory database; then TVM's default CPU pipeline. No candidate is built or timed."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod, _ctx):
        with target:
            mod = relax.pipeline.zero_pipeline()(mod)
            database = ms.database.MemoryDatabase()
            for i, task in enumerate(ms.relax_integration.extract_tasks(mod, target)):
                kernel = task.dispatched[0]
                context = ms.TuneContext(mod=kernel, target=target, space_generator="post-order-apply",
                                         task_name=task.task_name, rand_state=seed + i)
                sch = context.generate_design_space()[0]
                if all(post.apply(sch) for post in context.space_generator.postprocs):  # else left unscheduled
                    database.commit_tuning_record(ms.database.TuningRecord(
                        sch.trace, database.commit_workload(kernel), [1.0], target))
            with database:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            return relax.pipeline.get_default_pipeline(target)(mod)
    return pipeline


def _refuse_newer_opset(model) -> None:
    """TVM's importer converts each operator by its newest rule at or below the model's opset, so a model of an
    opset newer than any the onnx package here knows was built as if its operators meant what they used to (a Relu
    at opset 99 was measured; onnxruntime refuses it)."""
    import onnx
    newest = onnx.defs.onnx_opset_version()
    used = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if used > newest:
        raise LoadFailure(f"the model's ONNX opset {used} is newer than {newest}, the newest the onnx package beside "
                          f"TVM here knows: export it at opset {newest} or lower, or update onnx and apache-tvm")


def _build_target(target, schedule: str, tune_trials: int, tuning_dir):
    """The ``tvm.target.Target`` of a build, once what the build is asked for is checked: none of these refusals
    needs the model, so none waits for it to be read and converted (seconds for a big one) or for the tuner's
    intrinsics to be imported (about 20 s)."""
    tvm_target = _target(target)
    if schedule not in SCHEDULES:
        raise BadRequest(f"TVM schedule {schedule!r} is not known; valid: {', '.join(SCHEDULES)}")
    if schedule == "ms-sample":
        if "num-cores" not in tvm_target.attrs:  # the parallel loops are split for the device's cores
            raise BadRequest("TVM schedule 'ms-sample' needs the device's core count in the target, e.g. "
                             "{'kind': 'llvm', 'num-cores': 4}")
        _check_tuner_ffi("TVM schedule 'ms-sample'")
    if tune_trials > 0:
        _check_tuner_ffi("TVM tuning (tune_trials > 0)")
        if tuning_dir is None:
            raise BadRequest("MetaSchedule tuning needs a tuning_dir (its database is reused across builds)")
    return tvm_target


def compile_onnx(model, target="llvm", *, batch: int = 1, input_shape: tuple = (), tune_trials: int = 0,
                 tuning_dir: str | Path | None = None, opt_level: int = DEFAULT_OPT_LEVEL, schedule: str = "none"):
    """Import and compile an ONNX model (a file's path, or an ``onnx.ModelProto``); returns (executable, inputs).

    ``tune_trials > 0`` opts in to MetaSchedule tuning (relax's ``static_shape_tuning_pipeline``)
    with its database in ``tuning_dir``, which later builds reuse. Minutes per model; never used
    by the agent's measurements or the tests (it also needs xgboost-cpu and the
    apache-tvm-ffi 0.1.14 that hwl's install pins, without which the tuner segfaults).
    Untuned, ``schedule`` is one of SCHEDULES.

    Raises
    ------
    LoadFailure, UnsupportedOp, CompileFailure
    """
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend import onnx as relax_onnx  # only a build needs the importer

    tvm_target = _build_target(target, schedule, tune_trials, tuning_dir)
    try:
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model))
        model = _with_declared_shape(model, input_shape)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise LoadFailure(f"not a valid ONNX model: {type(exc).__name__}: {exc}") from None
    _refuse_newer_opset(model)
    inputs = onnx_inputs(model, batch, input_shape)
    try:
        mod = relax_onnx.from_onnx(model, shape_dict={n: s for n, s, _ in inputs})
    except tvm.error.OpNotImplemented as exc:
        raise UnsupportedOp(f"TVM's ONNX importer does not support an operator: {exc}") from None
    except Exception as exc:
        text = str(exc)
        if "not supported" in text or "not implemented" in text.lower():
            raise UnsupportedOp(f"TVM's ONNX importer: {text[:2000]}") from None
        raise CompileFailure(f"TVM could not import the model: {type(exc).__name__}: {text[:2000]}") from None
    pipeline = _dlight_pipeline(tvm_target) if schedule == "dlight" else "default"
    if schedule == "ms-sample":
        _import_tensor_intrinsics()
        pipeline = _sampled_schedule_pipeline(tvm_target)
    if tune_trials > 0:
        _import_tensor_intrinsics()
        pipeline = relax.pipeline.static_shape_tuning_pipeline(total_trials=tune_trials, target=tvm_target,
                                                               work_dir=str(tuning_dir))
    try:
        with tvm.transform.PassContext(opt_level=opt_level):
            exe = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    except Exception as exc:
        raise CompileFailure(f"tvm.compile failed for target {target!r}: {type(exc).__name__}: {str(exc)[:2000]}") from None
    return exe, inputs


def build_library(model, out_path, target="llvm", *, cc: str | None = None, batch: int = 1,
                  input_shape: tuple = (), tune_trials: int = 0, tuning_dir: str | Path | None = None,
                  opt_level: int = DEFAULT_OPT_LEVEL, schedule: str = "none") -> Path:
    """Compile an ONNX model (path or ``onnx.ModelProto``) into a shared library at ``out_path`` (written atomically).

    For a cross target give the matching compiler, e.g. ``cc="aarch64-linux-gnu-g++"``, or name
    the output ``*.tar`` to ship object files that ``tvm.runtime.load_module`` links on the device.
    ``tune_trials``/``tuning_dir``: opt-in MetaSchedule tuning, and ``schedule``, see :func:`compile_onnx`.
    """
    exe, _ = compile_onnx(model, target, batch=batch, input_shape=input_shape, tune_trials=tune_trials,
                          tuning_dir=tuning_dir, opt_level=opt_level, schedule=schedule)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix picks the format: .so links with cc; .tar leaves linking to the device.
    fd, tmp = tempfile.mkstemp(suffix=out_path.suffix or ".so", dir=out_path.parent)
    os.close(fd)
    try:
        exe.export_library(tmp, **({"cc": cc} if cc else {}))
        os.replace(tmp, out_path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CompileFailure(f"exporting the TVM library failed: {exc}") from None
    return out_path


def _made_private(folder: Path) -> bool:
    """Whether ``folder`` is a real folder of this user that no other user may write into, after taking write
    access away from the others where it had it (a umask of 002 leaves the agent's folders group-writable).
    Libraries in a folder that was open to others are removed: any of them could have been put there."""
    try:
        st = folder.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return False
    if st.st_mode & 0o022:
        try:
            os.chmod(folder, stat.S_IMODE(st.st_mode) & ~0o022)
        except OSError:
            return False
        for old in (*folder.glob("*.so"), *folder.glob("*.so.sha256")):
            with contextlib.suppress(OSError):
                old.unlink()
        log.warning("%s was writable by other users: made it yours alone and removed its libraries", folder)
    return True


def _library_cache(cache_dir) -> Path | None:
    """``<cache_dir>/tvm``, or None (build in a private temporary folder) where another user could put a
    library there: loading one runs its code, and the shared temp dir it once fell back to let anyone do so."""
    if not cache_dir:
        return None
    folder = Path(cache_dir).absolute() / "tvm"  # a build runs in another working directory
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700, parents=True)
    if _made_private(Path(cache_dir)) and _made_private(folder):
        return folder
    log.warning("not caching TVM libraries in %s: it is not a folder of this user (give a cache folder of your own)",
                folder)
    return None


def _digest_file(lib_path: Path) -> Path:
    return lib_path.with_name(lib_path.name + ".sha256")


def record_library_digest(lib_path: Path, data: bytes) -> None:
    """Write ``<library>.sha256`` beside a library built from ``data``: the agent loads it only while it matches."""
    _digest_file(lib_path).write_text(hashlib.sha256(data).hexdigest() + "\n")


def _read_recorded(lib_path: Path) -> tuple[bytes, str, str] | None:
    """A library's bytes, read once, with their sha256 and the sha256 recorded at its build; None when either
    file is missing."""
    try:
        recorded = _digest_file(lib_path).read_text().strip()
        data = lib_path.read_bytes()
    except OSError:
        return None
    return data, hashlib.sha256(data).hexdigest(), recorded


def _cached_library(folder: Path | None, bhash: str) -> bytes | None:
    """The bytes of the library built earlier for ``bhash``, read once, only while they hash as they did at its
    build: a file swapped or cut short since is built again, never loaded."""
    found = _read_recorded(folder / f"{bhash}.so") if folder is not None else None
    if found is None:
        return None  # not built yet, or built before digests were recorded
    data, actual, recorded = found
    if actual == recorded:
        return data
    log.warning("cached TVM library %s has sha256 %s, not the %s recorded at its build; building it again",
                folder / f"{bhash}.so", actual, recorded)
    return None


def runs_parallel_loops(library: bytes) -> bool:
    """Whether a compiled library's bytes (a shared library, or a tar of object files) have a kernel with a
    parallel loop, the only kind that TVM's thread pool runs on more than one thread."""
    return PARALLEL_LAUNCH in library


def _refuse_threads_it_cannot_use(threads: int, parallel: bool, tuned: bool) -> None:
    """A library without a parallel loop runs on one thread: a record at more would be mislabelled."""
    if threads > 1 and not parallel:
        built = "this tuned library" if tuned else "TVM's default CPU build (untuned)"
        raise BadRequest(f"tvm at {threads} threads: {built} has no parallel loop, so it runs on one thread "
                         "whatever TVM_NUM_THREADS says; measure it at 1 thread on one core, build with parallel "
                         "loops (options.schedule = 'ms-sample'), or ship MetaSchedule-tuned libraries "
                         "(options.library_dir with tuned = true, filled by scripts/build_tvm_libraries "
                         "--tune-trials on a build host)")


def _library_in_dir(folder: Path, model_sha256: str) -> tuple[bytes, Path]:
    """options.library_dir: the bytes of the library built for this model on a build host (``<model sha256>.so``
    beside its recorded ``.so.sha256``, see scripts/build_tvm_libraries), read once, taken only from a folder no
    other user may write and while they hash as recorded: loading a library runs its code."""
    try:
        st = folder.lstat()
    except OSError:
        raise BadRequest(f"tvm option library_dir: {folder} is not a folder on this device") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise BadRequest(f"tvm option library_dir: {folder} must be a folder of this user that no other user may "
                         "write (chmod go-w), since loading a library runs its code")
    lib_path = folder / f"{model_sha256}.so"
    if not lib_path.is_file():
        raise BadRequest(f"tvm option library_dir: {folder} has no library for this model ({lib_path.name}); build "
                         "it on a build host with scripts/build_tvm_libraries and copy it there with `hwl deploy "
                         "DEVICE --tvm-libraries DIR`")
    found = _read_recorded(lib_path)
    if found is None or found[1] != found[2]:
        raise LoadFailure(f"TVM library {lib_path} does not hash as its {lib_path.name}.sha256 records: not loaded")
    return found[0], lib_path


def _load_library(data: bytes, lib_path: Path):
    """Load exactly ``data``, the bytes that were hashed and scanned, from a private copy: loading runs the
    library's code, and ``lib_path`` itself could be replaced after it was read."""
    import tvm
    copy, folder = private_copy(data, lib_path.name)  # the suffix tells TVM a shared library from a tar
    try:
        return tvm.runtime.load_module(str(copy))
    except Exception as exc:
        raise LoadFailure(f"cannot load TVM library {lib_path}: {exc}") from None
    finally:
        folder.cleanup()  # a loaded shared library stays mapped once its file is gone


def _build(model, folder: Path | None, bhash: str, target, options: dict, request, opt_level: int,
           schedule: str) -> bytes:
    """Compile ``model`` (an ``onnx.ModelProto``) into the cache, or a private temporary folder; its bytes."""
    with tempfile.TemporaryDirectory(prefix="hwl-tvm-") as private:  # no cache: a folder only we can write
        lib_path = (folder or Path(private)) / f"{bhash}.so"
        build_library(model, lib_path, target, cc=options.get("cc"), batch=request.batch,
                      input_shape=tuple(request.input_shape), opt_level=opt_level, schedule=schedule)
        data = lib_path.read_bytes()
        record_library_digest(lib_path, data)
        return data


def _prebuilt_library(options: dict) -> tuple[bytes, Path]:
    """``options.library``'s bytes, checked against ``options.library_sha256`` (loading a library runs its code,
    so a library the request cannot vouch for is never loaded)."""
    expected = options.get("library_sha256")
    if not is_sha256(expected):
        got = "" if expected is None else f", not {expected!r}"
        raise BadRequest(f"tvm option library needs library_sha256, the library's sha256 as built (64 lower-case "
                         f"hex digits, as sha256sum prints them{got}): loading a library runs its code, so the "
                         "agent loads none it cannot check")
    lib = read_verified(options["library"], expected, what="TVM library")
    return lib.data, lib.path


def _model_inputs(request, model) -> tuple:
    """The checked model's bytes parsed (see onnx_model.read_model), and the inputs the request feeds it: a request
    that does not fit the model is refused here, with onnx alone, before TVM is imported."""
    proto = read_model(model.data)
    return proto, onnx_inputs(proto, request.batch, tuple(request.input_shape))


def prepare(request, model, cache_dir=None) -> Prepared:
    options = dict(request.options)
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise BadRequest(f"unknown tvm option(s) {', '.join(unknown)}; valid: {', '.join(sorted(KNOWN_OPTIONS))}")
    for key in ("library", "library_dir", "cc"):
        if not isinstance(options.get(key, ""), str):  # the build or the load failed on it, as the model's failure
            raise BadRequest(f"tvm option {key}={options[key]!r}; must be a path")
    if options.get("library") and options.get("library_dir"):
        raise BadRequest("tvm options library and library_dir exclude each other: give one")
    if options.get("tuned") and not (options.get("library") or options.get("library_dir")):
        raise BadRequest("tvm option tuned=true needs options.library or library_dir: the agent never tunes inside a "
                         "measurement; tune on a build host (scripts/build_tvm_libraries --tune-trials) and ship the "
                         "library")
    target = options.get("target", "llvm")
    opt_level = options.get("opt_level", DEFAULT_OPT_LEVEL)
    if opt_level not in (0, 1, 2, 3):
        raise BadRequest(f"tvm option opt_level={opt_level!r}; valid: 0, 1, 2, 3")
    schedule = options.get("schedule", "none")
    if schedule not in SCHEDULES:
        raise BadRequest(f"tvm option schedule={schedule!r}; valid: {', '.join(SCHEDULES)}")
    if schedule != "none" and (options.get("library") or options.get("library_dir")):
        raise BadRequest("tvm option schedule applies to the agent's own build, not to a prebuilt library "
                         "(scripts/build_tvm_libraries --schedule builds those)")
    meta = {"target": str(target), "opt_level": opt_level, "tuned": bool(options.get("tuned", False)),
            "schedule": schedule, "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"), "compile_ms": None,
            "library_cached": False}
    proto = None  # a prebuilt library comes without its model: its input is the request's
    if options.get("library"):
        if not request.input_shape:
            raise BadRequest("tvm with a prebuilt library needs 'input_shape' (and 'dtype')")
        check_batch_of(tuple(request.input_shape), request.batch)  # the record said --batch, the library ran this
        inputs = [("input", tuple(request.input_shape), request.dtype)]
        data, lib_path = _prebuilt_library(options)
        bhash = options["library_sha256"]
    elif model is None:
        raise BadRequest("tvm compiles an ONNX file ('model' or 'sha256'), or loads options.library")
    elif options.get("library_dir"):
        proto, inputs = _model_inputs(request, model)
        data, lib_path = _library_in_dir(Path(options["library_dir"]), request.sha256)
        bhash = hashlib.sha256(data).hexdigest()
    else:
        proto, inputs = _model_inputs(request, model)
        _refuse_newer_opset(proto)  # the build would refuse it too, once TVM and its importer were imported
        bhash = build_hash(request.sha256, target, opt_level, schedule, _built_shapes(proto, inputs))
        folder = _library_cache(cache_dir)
        data = _cached_library(folder, bhash)
        meta["library_cached"] = data is not None
        if data is None:
            importlib.import_module("tvm.relax.frontend.onnx")  # its import is no part of compile_ms
            t0 = time.perf_counter_ns()
            with without_side_files():  # whatever a tensor names, the importer finds nothing no hash covers
                data = _build(proto, folder, bhash, target, options, request, opt_level, schedule)
            meta["compile_ms"] = (time.perf_counter_ns() - t0) / 1e6
        lib_path = folder / f"{bhash}.so" if folder else Path(f"{bhash}.so")
    meta["parallel_loops"] = runs_parallel_loops(data)
    _refuse_threads_it_cannot_use(request.threads, meta["parallel_loops"], meta["tuned"])
    import tvm  # only here, past every refusal that needs none of it: its import takes seconds
    from tvm import relax
    lib = _load_library(data, lib_path)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(lib, dev)
    args = [tvm.runtime.tensor(random_input(s, d, request.seed + i), dev) for i, (_, s, d) in enumerate(inputs)]
    vm.set_input("main", *args)
    evaluators: dict = {}
    pending: list[float] = []

    def block(k: int) -> int:
        """k inferences timed by TVM's own timer; blocks come from chunked evaluator calls."""
        nonlocal pending
        if k not in evaluators:
            evaluators.clear()
            pending = []
            evaluators[k] = vm.time_evaluator("invoke_stateful", dev, number=k, repeat=EVALUATOR_CHUNK)
        if not pending:
            pending = list(evaluators[k]("main").results)
        return int(round(pending.pop(0) * k * 1e9))

    def on_window(phase: str) -> None:
        """A phase keeps none of the blocks timed in the one before: a timed window's samples (its repeat median,
        the drift between windows, what else ran on the cores meanwhile) are all timed in it (rules 7, 11)."""
        nonlocal pending
        pending = []

    def first() -> int:
        # time_evaluator discards its first call, so the very first inference is timed here.
        t0 = time.perf_counter_ns()
        vm.invoke_stateful("main")
        dev.sync()
        return time.perf_counter_ns() - t0

    dtype = float_type([d for _, _, d in inputs] + output_dtypes(proto)) if proto is not None else ""
    return Prepared(block=block, first=first, runtime_version=tvm.__version__, provider=f"relax-vm-{dev}", dtype=dtype,
                    build_hash=bhash, input_shape=tuple(inputs[0][1]) if inputs else (), metadata=meta,
                    on_window=on_window)


__all__ = ["build_hash", "build_library", "compile_onnx", "prepare", "record_library_digest"]
