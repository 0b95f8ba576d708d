"""`hwl measure MODEL.onnx --runtime ort --threads 1 --cores 0 --profile quick [--json]`.

Measures one model here, through the same pinned child process the agent uses, and prints the
record (JSON with --json, a short table otherwise). Exit status 0 for ok / unstable records,
1 for any other outcome, 2 for a request the runtime refuses (an unknown option value, say) or this machine
cannot serve (a provider or a tool it lacks).
"""
from __future__ import annotations

import json
import os
import shlex
import sys

from agents.errors import BadRequest, HashMismatch, ModelNotFound, RuntimeUnavailable
from agents.protocol import MEASURED_OUTCOMES, agent_runs_threads
from harness.cli.common import positive_int, user_path
from harness.errors import UserError
from harness.paths import why_not_a_file
from harness.text import count

RUNTIMES = ("ort", "onnxruntime", "tvm", "torch", "command")
# Rule 7 on this machine: never time alongside a campaign of the shipped local devices (their thermal
# domain), nor on a core one of them holds.
LOCAL_LOCK_KEYS = ("local.thermal.local-cpu",)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("measure", help="measure one model's latency on this machine")
    p.add_argument("model", type=user_path, nargs="?", default="",
                   help="ONNX file (not needed for --runtime torch --arch or a command that takes no file)")
    p.add_argument("--runtime", choices=RUNTIMES, default="ort",
                   help="what times the model: onnxruntime (ort, the same), TVM, torch eager or a command's tool "
                        "(default ort)")
    p.add_argument("--threads", type=positive_int, default=1, help="runtime threads (default 1)")
    p.add_argument("--cores", default="",
                   help="pin the measurement to these CPUs, e.g. '0' or '0,1' (default: not pinned)")
    p.add_argument("--profile", choices=["quick", "standard"], default="standard",
                   help="timing profile (quick: short windows for demos; standard: the method's own; default standard)")
    p.add_argument("--policy", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a timing policy field, e.g. repeats=3 (repeatable)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="runtime option, e.g. graph_optimization=basic or target=llvm (repeatable; "
                        "values are parsed as JSON when they can be)")
    p.add_argument("--arch", help="torch: SPACE:KEY[:DATASET], e.g. nb201:123 or "
                   "fbnet:k3_e1,k5_e6,...,skip (22 comma-separated op names)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--input-shape", default="", help="full input shape, e.g. 1,3,32,32")
    p.add_argument("--command", dest="command_template", help="command runtime: template, e.g. \"adb shell "
                                                              "/data/benchmark --graph={model}\"")
    p.add_argument("--regex", help="command runtime: regex of the latency in the output")
    p.add_argument("--json-path", help="command runtime: dotted path of the latency in JSON output")
    p.add_argument("--unit", choices=["ns", "us", "ms", "s"], help="command runtime: unit of the parsed latency")
    p.add_argument("--cache-dir", type=user_path, help="where compiled TVM libraries are cached")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_measure_cli)


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items, flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = _value(val)
    return out


def _ints(text: str, flag: str, *, low: int = 0, distinct: bool = False) -> tuple:
    """The whole numbers >= ``low`` of a comma-separated flag (each once if ``distinct``): the agent's refusals named
    its protocol fields ("measure: 'cores' lists a core twice"), not the flag."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers") from None
    if any(v < low for v in values):
        raise UserError(f"{flag} {text!r}: expected whole numbers >= {low}")
    if distinct and (twice := sorted({v for v in values if values.count(v) > 1})):
        raise UserError(f"{flag} {text!r} names {', '.join(map(str, twice))} twice")
    return values


def _check_inputs(runtime: str, model: str, arch: str | None) -> None:
    """The model a runtime needs, said in the command's own flags (the agent's own message names protocol
    fields that `hwl measure` has no flag for: 'sha256', 'factory')."""
    if runtime == "torch" and (model or not arch):
        raise UserError("--runtime torch builds the network from --arch SPACE:KEY[:DATASET] (e.g. nb201:1462) "
                        "and takes no ONNX file" + (f"; got {model}" if model else ""))
    if runtime in ("ort", "onnxruntime", "tvm") and not model:
        raise UserError(f"--runtime {runtime} times an ONNX file: give it (hwl measure MODEL.onnx ...)"
                        + ("; --arch is for --runtime torch" if arch else ""))
    if runtime in ("ort", "onnxruntime", "tvm") and arch:  # it named the record: arch 0's file ran as nb201:1
        raise UserError(f"--arch is for --runtime torch, which builds the network; --runtime {runtime} times "
                        f"{model} as it is: leave --arch out")


def _check_command_template(template, model: str) -> None:
    """A placeholder typo in --command, refused as a profile's is: the tool got '{modle}' as its file name. And a
    {model} or {sha256} with no model file given: the tool got '' as its file, and failed on it as on a model."""
    from harness.profiles import TEMPLATE_PLACEHOLDERS, unknown_placeholders

    if isinstance(template, (list, tuple)):  # --option command='["tool", "{model}"]'
        words = [str(word) for word in template]
    elif isinstance(template, str):
        try:
            words = shlex.split(template)
        except ValueError as exc:
            raise UserError(f"--command is not a command line ({exc}): {template!r}") from None
    else:
        return  # not a template at all: the agent says so
    if why := unknown_placeholders(words, TEMPLATE_PLACEHOLDERS["runtime.options.command"]):
        raise UserError(f"--command {why}")
    named = [p for p in ("{model}", "{sha256}") if any(p in word for word in words)]
    if named and not model:
        raise UserError(f"--command names {' and '.join(named)}, but no model file is given: hwl measure MODEL.onnx "
                        "--runtime command ...")


def run_measure_cli(args) -> int:
    _check_inputs(args.runtime, args.model, args.arch)
    if args.cache_dir and args.runtime != "tvm":  # only TVM compiles: another runtime took the folder and left it
        raise UserError(f"--cache-dir keeps TVM's compiled libraries, for --runtime tvm, not {args.runtime}")
    options = _pairs(args.option, "--option")
    for key, val in (("command", args.command_template), ("regex", args.regex),
                     ("json_path", args.json_path), ("unit", args.unit)):
        if val is not None and args.runtime != "command":  # the runtime's refusal named an '--option unit'
            raise UserError(f"--{key.replace('_', '-')} is for --runtime command, not {args.runtime}")
        if val is not None:
            options[key] = val
    arch = {}
    if args.arch:
        space, _, rest = args.arch.partition(":")
        key, _, dataset = rest.rpartition(":") if rest.count(":") else (rest, "", "")
        if not key:
            raise UserError(f"--arch {args.arch}: give SPACE:KEY[:DATASET], e.g. nb201:1462")
        arch = {"space": space, "key": int(key) if key.isdigit() else key}
        if dataset:
            arch["dataset"] = dataset
    if args.runtime == "command":
        _check_command_template(options.get("command"), args.model)
    result = measure(model=args.model, runtime=args.runtime, threads=args.threads,
                     cores=_ints(args.cores, "--cores", distinct=True), profile=args.profile,
                     policy=_pairs(args.policy, "--policy"), options=options, arch=arch, batch=args.batch,
                     input_shape=_ints(args.input_shape, "--input-shape", low=1), cache_dir=args.cache_dir)
    if args.json:
        out = {"outcome": result.outcome, "message": result.message, "elapsed_s": result.elapsed_s,
               "measurement": result.measurement}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        _print_table(result)
    return 0 if result.outcome in MEASURED_OUTCOMES else 1


def measure(*, model: str = "", runtime: str = "ort", threads: int = 1, cores=(), profile: str = "standard",
            policy: dict | None = None, options: dict | None = None, arch: dict | None = None, batch: int = 1,
            input_shape=(), cache_dir=None):
    """Measure one model here through the agent's child-process path; returns a protocol Result."""
    from pathlib import Path

    from agents import fingerprint, in_flight
    from agents.child import run_measurement
    from agents.protocol import Measure
    from agents.server import IN_FLIGHT_FOLDER, check_cores, check_threads, resolve_model, sha256_of
    from harness.device_worker import device_locks, local_agent_cache
    from spaces import resolve_archs
    from spaces.cost import dataset_of

    sha = ""
    if model:
        path = Path(model)
        if why := why_not_a_file(path):
            raise UserError(f"model file {model} {why}")
        if path.stat().st_size == 0:  # the runtimes said "No graph was found", "does not have an ir_version set"
            raise UserError(f"model file {model} is empty (0 bytes): export or copy it again")
        sha = sha256_of(path)
        model = str(path.resolve())
    options = dict(options or {})
    if runtime == "tvm" and options.get("library") and "library_sha256" not in options:
        # the agent loads a prebuilt library only as its request vouches for it: the bytes named here, now
        library = Path(str(options["library"]))
        if why := why_not_a_file(library):
            raise UserError(f"TVM library {library} {why}")
        options["library_sha256"] = sha256_of(library)
    try:
        request = Measure(id="cli", runtime=runtime, model=model, sha256=sha, arch=arch or {}, batch=batch,
                          input_shape=tuple(input_shape), threads=threads, cores=tuple(cores), profile=profile,
                          policy=policy or {}, options=options)
        if arch:  # an unknown space, architecture or dataset: a usage error here, not a failed measurement
            resolve_archs(arch.get("space", ""), [str(arch.get("key", ""))])
            if arch.get("dataset") is not None:
                dataset_of(arch["space"], arch["dataset"])
        usable = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        check_cores(request.cores, usable)
        check_threads(request.threads, request.cores, usable, request.runtime_name)
        if agent_runs_threads(request.runtime_name):  # a tool's {threads} may be a phone's, its cores this machine's
            _check_one_core_per_thread(request.threads, request.cores)
        model_path = resolve_model(request, None)
        from agents.timing import TimingPolicy
        TimingPolicy.from_profile(profile, policy)  # refuse bad policy fields before starting anything
        fp_id = fingerprint.fingerprint_id(fingerprint.collect())
        # the job's mark is recorded where this machine's local agents keep theirs: an `hwl measure` killed
        # mid-job (kill -9, a closed terminal) left what its tool started running beside every later timing
        records = local_agent_cache() / IN_FLIGHT_FOLDER
        with device_locks(LOCAL_LOCK_KEYS + tuple(f"local.core.{c}" for c in request.cores)):
            swept = in_flight.sweep(records)
            result = run_measurement(request, model_path, fingerprint_id=fp_id, cache_dir=cache_dir,
                                     in_flight_dir=records)
        result = in_flight.said_in(result, swept)
    except (BadRequest, ModelNotFound, HashMismatch, RuntimeUnavailable) as exc:
        raise UserError(str(exc)) from None
    # the runtime refused the request itself (--option provider=bogus, a --regex that does not compile) or this
    # machine cannot serve it (--option provider=cuda without CUDA, a --command tool that is not installed): a usage
    # error, said as the checks above say theirs, not a failure of the model with exit status 1
    said_by_child, _, why = result.message.partition(": ")
    if result.outcome in ("load_error", "runtime_error") and said_by_child in (BadRequest.__name__,
                                                                               RuntimeUnavailable.__name__):
        raise UserError(why)
    return result


def _check_one_core_per_thread(threads: int, cores) -> None:
    """More threads than pinned cores, refused as a profile's are: `--threads 2 --cores 1` was timed oversubscribed
    (the agent only logs it, where `hwl measure` shows no log)."""
    if cores and threads > len(cores):
        raise UserError(f"--threads {threads} exceeds the {count(len(cores), 'core', 'cores')} of --cores "
                        f"{','.join(map(str, cores))}; pin at least one core per thread")


def _ms(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _core_load(m) -> str:
    """The share of the measured cores' time something else took in the worst window (rule 7), or why unknown."""
    if m.foreign_cpu_frac_max is None:
        return f"unknown: {(m.core_load or {}).get('unknown') or 'not recorded'}"
    return f"{m.foreign_cpu_frac_max:.1%} (steal {m.steal_frac_max:.1%})"


def _print_table(result) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if result.measurement is None:  # escaped: a message naming "[measurement.policy]" is no markup
        # one line, as the agent says it: rich broke it at 80 columns into a pipe or a log, splitting a grep's match
        console.print(f"[bold red]{result.outcome}[/]: {escape(result.message)}", soft_wrap=True)
        return
    m = result.record()
    st = m.statistics()
    table = Table(title=f"{m.spec.arch} on {m.spec.runtime} {m.spec.runtime_version} "
                        f"({m.spec.provider}, {count(m.spec.threads, 'thread', 'threads')}, "
                        f"cores {list(m.spec.cores) or 'any'})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    rows = [("outcome", result.outcome), ("label (median of repeat medians)", f"{st['label_ms']:.4f} ms"),
            ("median", f"{st['median_ms']:.4f} ms"),
            ("95% CI of median", f"{st['median_ci95_lo_ms']:.4f} - {st['median_ci95_hi_ms']:.4f} ms"),
            ("mean +- std", f"{st['mean_ms']:.4f} +- {st['std_ms']:.4f} ms"),
            ("IQR / median", f"{st['iqr_over_median']:.1%}"), ("repeat drift", f"{st['drift']:.1%}"),
            ("samples x block", f"{st['n_samples']} x {m.block_size}"),
            # '-' where the runtime does not know (a command's tool loads and feeds the model): it printed '[]' and
            # 'nan ms'
            ("input (first), batch, dtype", f"{list(m.spec.input_shape) or '-'}, {m.spec.batch}, {m.spec.dtype}"),
            ("init / first", f"{_ms(m.init_ms, 1)} / {_ms(m.first_ms, 3)} ms"),
            ("others on the cores (worst window)", _core_load(m)),
            ("flags", ", ".join(st["flags"]) or "-"), ("profile", m.spec.profile)]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if result.message:
        console.print(escape(result.message), soft_wrap=True)
