"""The one place that touches Ray's API for campaigns: the session, device actors, export tasks.

* :func:`ray_session` starts a local Ray (``num_cpus``, no dashboard, no task events:
  :data:`LOCAL_RAY_SYSTEM_CONFIG`, no autoscaler status in its logs: :data:`LOCAL_RAY_ENV`,
  a ``host:<name>`` custom resource per local host), pinned with
  this process to the cores the local devices leave free (:func:`cores_kept_free`), or joins an existing cluster
  (``address``; a Ray Client join the head fails on its side is tried again); it shuts Ray down and
  restores the affinity. A local Ray's session folder is
  marked as hwl's, and hwl's finished ones beyond the newest few are removed
  (:mod:`harness.ray_sessions`).
* :func:`device_actor` wraps :class:`~harness.device_worker.DeviceWorker` with ``ray.remote``:
  a named actor ``device:<name>`` (``get_if_exists``), pinned by ``host:<name>``, no restarts
  and no task retries (the coordinator owns retries), ``status`` in its own concurrency group.
* :func:`export_task` is a plain function run as a Ray task (:func:`export_remote`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import hashlib
import importlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from harness.device_worker import DeviceWorker
from harness.errors import ClusterError
from harness.profiles import DeviceProfile
from harness.ray_sessions import mark_session, prune_sessions, sessions_kept

NAMESPACE = "hwl"
log = logging.getLogger(__name__)
# Ray's own bookkeeping in the local Ray hwl starts (never a cluster given by address: that is its owner's).
# Task events (each task's states and profile spans, for the dashboard, `ray list tasks`, ray.timeline) cost
# the GCS about 3.6 KiB a task up to Ray's default of 100,000 tasks, some 350 MiB (a job is 2 tasks, an
# export and a measurement: a long campaign gets there), and buffers in the driver and workers (up to
# 18 MiB each over 80,000 tasks). Nothing reads them here: hwl's local Ray has no dashboard, and hwl's
# record is its store. So they are not reported; a user who turns reporting back on
# (RAY_task_events_report_interval_ms=1000) keeps the last 1,000 tasks. Every process also appended its
# event-loop stats to its log once a minute (gcs_server.out, raylet.out, each worker's log: 55 MB a day of
# the session folder on an idle Ray, kept after the run); once an hour is enough for a post-mortem. (-1 is
# not "never" to Ray: it wrote them without pause, 14 GB in 150 s.) A RAY_<key> the user set wins.
LOCAL_RAY_SYSTEM_CONFIG = {"task_events_report_interval_ms": 0, "task_events_max_num_task_in_gcs": 1000,
                           "event_stats_print_interval_ms": 3_600_000}
# The autoscaler's monitor (a process every head node runs) logged the cluster's status, some 20 lines, and
# two timing lines every 5 s to monitor.log: about 13 MB a day kept in the session folder. A local Ray of one
# node has nothing to scale, and nothing in hwl reads its status (`ray status` still shows it, a minute old at
# most). Its settings are environment variables of the processes ray.init starts, not system config: they are
# set while ray.init runs, and a variable the user set wins.
LOCAL_RAY_ENV = {"RAY_ENABLE_CLUSTER_STATUS_LOG": "0", "AUTOSCALER_UPDATE_INTERVAL_S": "60"}
# A Ray Client head starts a server process per driver; on a busy head that start fails now and then
# ("Starting Ray client server failed"), and the next driver's start works: hwl tries the join this often.
RAY_CLIENT_TRIES = 3
RAY_CLIENT_RETRY_WAIT_S = 2.0


def keep_ray_token_private() -> None:
    """Make this machine's Ray token file readable by this user alone. Ray writes ~/.ray/auth_token as the umask
    leaves it (0644), and anyone holding the token may join the cluster and run code as this user: hwl's local Ray
    listens on every interface, its token is what keeps others out."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(path, 0o600)
            log.info("made Ray's token file %s readable by this user alone", path)


def _warn_if_token_auth_off() -> None:
    """The user's RAY_AUTH_MODE=disabled leaves hwl's local Ray open: it listens on every interface, and its token
    is all that keeps others from running code as this user."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        log.warning("RAY_AUTH_MODE=disabled: hwl's local Ray listens on every network interface of this machine "
                    "without a token, so anyone who reaches it can run code as you; unset RAY_AUTH_MODE to keep "
                    "Ray's token auth")


class _WithoutAuthOptOutAdvice(logging.Filter):
    """Drops Ray's warning, at every local start, that token authentication is on and RAY_AUTH_MODE=disabled turns
    it off: hwl keeps it on on purpose (its local Ray listens on every interface), and warns where a user turned it
    off (:func:`_warn_if_token_auth_off`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


# The logger of Ray's module that says it (ray/_private/authentication/authentication_token_setup.py)
RAY_AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


@contextlib.contextmanager
def _without_auth_opt_out_advice():
    ray_auth_log = logging.getLogger(RAY_AUTH_SETUP_LOGGER)
    advice = _WithoutAuthOptOutAdvice()
    ray_auth_log.addFilter(advice)
    try:
        yield
    finally:
        ray_auth_log.removeFilter(advice)


def task_error(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor call raised (RayTaskError keeps it as ``.cause``)."""
    return getattr(exc, "cause", None) or exc


def cores_kept_free(core_sets, all_cores) -> set[int]:
    """The cores a local Ray (its exports) and the coordinator keep off: those of every local device pinned to
    cores, or, where together they span every core (the demo's 1-core and 2-core devices on a 2-core machine),
    those of as many devices as leave a core over, fewest cores first. The device spanning every core shares
    its cores with Ray whatever is done; the others need not (their union used to leave Ray unpinned, on every core).
    None (Ray unpinned) where what is left would be all of some device's cores: devices on cores 0 and 1 would
    otherwise get Ray on the one, even while the other, idle, could take it."""
    sets = [set(c) for c in core_sets if c]
    free: set[int] = set()
    for cores in sorted(sets, key=len):
        if set(all_cores) - free - cores:
            free |= cores
    kept = set(all_cores) - free
    return set() if any(cores <= kept for cores in sets) else free


@contextlib.contextmanager
def ray_session(*, address: str | None = None, num_cpus: int = 2, hosts=(), avoid_cores=(),
                temp_dir: str | None = None):
    """Connect to Ray for the duration of a ``with`` block (a caller's own connection is kept).

    A local Ray kept off ``avoid_cores`` gets at most one CPU per core left to it: two export tasks on one core
    each imported torch at a campaign's start, taking turns, so the first model came after both imports."""
    import ray

    if ray.is_initialized():  # a caller (test, notebook) owns the Ray connection
        yield
        return
    old = os.sched_getaffinity(0)
    keep = set(range(os.cpu_count() or 1)) - set(avoid_cores)
    pinned = address is None and keep and avoid_cores
    if pinned:
        os.sched_setaffinity(0, keep)  # Ray's processes inherit this: off the measured cores
    # Ray's driver prints its nodes' error messages (a worker died, ...) to stdout, where hwl
    # writes its result (JSON a script may read): send them to stderr with the logs.
    with _native_threads_at_most(len(keep) if pinned else None), contextlib.redirect_stdout(sys.stderr):
        try:
            if address:
                _join_cluster(address, hosts)
            else:
                _start_local(min(num_cpus, len(keep)) if pinned else num_cpus, hosts, temp_dir)
            keep_ray_token_private()  # started or joined: the token file is on this machine either way
            yield
        finally:
            # held too: a second Ctrl-C broke ray.shutdown off, and a third the one Ray's atexit hook then ran,
            # which printed a traceback
            with _signals_held():
                if not address and not ray.is_initialized():  # ray.init did not get to connect
                    _stop_half_started_ray()
                with contextlib.suppress(Exception):
                    ray.shutdown()
                os.sched_setaffinity(0, old)


def _native_threads_at_most(cores: int | None):
    """BLAS and OpenMP thread pools of this process cut to the ``cores`` it is pinned to (None: as they are; none
    raised), for a ``with`` block. Sized for every core, their threads spin-waited for each other on fewer: pinned
    to one core under load, onboarding's pretraining (27 small matrix products a group) took 20 s of its 34 s."""
    if cores is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_info, threadpool_limits

    return threadpool_limits(limits={pool["filepath"]: min(pool["num_threads"], cores) for pool in threadpool_info()})


def _join_cluster(address: str, hosts) -> None:
    """Join the Ray cluster at ``address``, failing fast with what to do where nothing (or no Ray head) answers
    there or the head refuses; warns of ``hosts`` that no node of the cluster offers."""
    import ray

    if address.startswith("ray://"):
        _check_ray_client_installed(address)
    check_reachable(address)
    try:
        _join(address)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        raise ClusterError(_join_refused(address, exc)) from None
    _warn_hosts_no_node_offers(hosts)


def _start_local(num_cpus: int, hosts, temp_dir: str | None) -> None:
    """Start a local Ray with hwl's settings (:data:`LOCAL_RAY_SYSTEM_CONFIG`, :data:`LOCAL_RAY_ENV`) and a
    ``host:<name>`` resource per host in ``hosts``; then tidy hwl's earlier session folders."""
    import ray

    kwargs = {"_temp_dir": temp_dir} if temp_dir else {}
    kwargs["_system_config"] = local_system_config()
    _warn_if_token_auth_off()
    keep = sessions_kept()  # a bad setting stops here, before Ray starts
    try:
        with _signals_held(), _environment(local_ray_env()), _without("RAY_ADDRESS"), _without_auth_opt_out_advice():
            ray.init(num_cpus=num_cpus, include_dashboard=False, namespace=NAMESPACE,
                     resources={h: 1000 for h in hosts}, log_to_driver=False, **kwargs)
    except OSError as exc:
        if "AF_UNIX path length" not in str(exc):
            raise
        raise ClusterError(f"Ray cannot start a local node: its socket paths under the temporary folder "
                           f"would be too long for Unix ({exc}); set RAY_TMPDIR to a short folder such "
                           "as /tmp/ray") from None
    _tidy_sessions(keep)


@contextlib.contextmanager
def _without(variable: str):
    """``variable`` out of this process's environment for a ``with`` block: a local Ray (hwl zcp's; a campaign's
    takes RAY_ADDRESS as its --address) is no join, and ray.init with RAY_ADDRESS set refused num_cpus with a
    traceback."""
    value = os.environ.pop(variable, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[variable] = value


def _join(address: str) -> None:
    """``ray.init`` on the cluster at ``address``; a Ray Client join whose server-side start failed is tried
    again, up to :data:`RAY_CLIENT_TRIES` times."""
    import ray

    for attempt in range(1, RAY_CLIENT_TRIES + 1):
        try:
            with _signals_held():
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
            return
        except ConnectionError as exc:
            if not _server_start_failed(address, exc) or attempt == RAY_CLIENT_TRIES:
                raise
            log.warning("the Ray Client server at %s could not start a server for this driver (%s); trying again "
                        "(%d of %d)", address, _server_reason(exc), attempt + 1, RAY_CLIENT_TRIES)
            with contextlib.suppress(Exception):
                ray.shutdown()
            time.sleep(RAY_CLIENT_RETRY_WAIT_S)


def _server_start_failed(address: str, exc: Exception) -> bool:
    """Whether a Ray Client join failed on the head's side, after the head's client server answered: Ray's
    client raises ConnectionAbortedError with the server's traceback then."""
    return address.startswith("ray://") and "Initialization failure from server" in str(exc)


def _server_reason(exc: Exception) -> str:
    """The last line of the head's traceback in a failed Ray Client join (the error, not the stack)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else "no reason given"


def _join_refused(address: str, exc: Exception) -> str:
    """Why ``ray.init(address=...)`` failed after :func:`check_reachable` found a Ray head answering there (or, for
    ``auto``, which it cannot check, found none on this machine)."""
    if _server_start_failed(address, exc):  # the head answered, and failed on its side: no "start it there"
        return (f"cannot join the Ray cluster at {address!r}: its Ray Client server failed to start a server for "
                f"this driver, {RAY_CLIENT_TRIES} times ({_server_reason(exc)}). That log is in the head's session "
                "folder (/tmp/ray/session_latest/logs unless its temp dir says otherwise); or run hwl on a node of "
                "the cluster and give --address the head's HOST:6379")
    why = str(exc).rstrip(".")
    if "Could not find any running Ray instance" in why:  # `auto`: Ray found no head on this machine to ask
        return (f"cannot join the Ray cluster at {address!r}: no Ray head runs on this machine (`auto` joins one "
                "started here with `ray start --head`); start it, give --address the head's HOST:PORT, or "
                f"{_run_locally()}")
    if not address.startswith("ray://") and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        # Ray's driver sends this machine's token to an address it is given (by name or RAY_ADDRESS) only in
        # token mode, so on the head's own machine, token file and all, the join failed, told to start a head
        return (f"cannot join the Ray cluster at {address!r}: {why}. A Ray head answers there: if it uses Ray's "
                "token auth (the default), set RAY_AUTH_MODE=token here, since Ray's driver sends this machine's "
                "token (~/.ray/auth_token, which must be the head's) to a given address only then; or "
                f"{_run_locally()}")
    return (f"cannot join the Ray cluster at {address!r}: {why}. Start it there with {_start_head(address)} (and "
            f"give this machine its token), or {_run_locally()}")


def _start_head(address: str) -> str:
    """The `ray start` that serves ``address``: a ray:// address is the head's Ray Client server, not its GCS port."""
    if address.startswith("ray://"):
        return "`ray start --head --ray-client-server-port PORT` (10001 unless it says otherwise)"
    return "`ray start --head --port PORT` (6379 unless it says otherwise)"


def _run_locally() -> str:
    """How to run a local Ray instead; RAY_ADDRESS stands for --address (the CLI's default), so it goes too."""
    return f"leave out --address{' and unset RAY_ADDRESS' if os.environ.get('RAY_ADDRESS') else ''} to run a local Ray"


def joined(address: str | None, hosts=()):
    """Join the Ray cluster at ``address`` for a ``with`` block (nothing without one): entered before a
    command makes its store file, so a wrong address (not Ray, Ray with token auth, ``auto`` with no
    cluster) fails with nothing written; the coordinator's own :func:`ray_session` keeps this connection."""
    return ray_session(address=address, hosts=hosts) if address else contextlib.nullcontext()


def local_system_config() -> dict:
    """:data:`LOCAL_RAY_SYSTEM_CONFIG` less the keys the user set as ``RAY_<key>`` (Ray's system config
    would override the user's variable)."""
    return {key: value for key, value in LOCAL_RAY_SYSTEM_CONFIG.items() if f"RAY_{key}" not in os.environ}


def _check_ray_client_installed(address: str) -> None:
    """Ray Client (``ray://``) needs grpcio, which a plain ``pip install ray`` leaves out: Ray's own
    ValueError about it came out of hwl as a traceback."""
    try:
        importlib.import_module("grpc")
    except ImportError:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: Ray Client (ray://) needs the grpcio "
                           "package, which is not installed here: `pip install 'hwl[client]'`, or run hwl on a "
                           "node of the cluster and give --address the head's HOST:6379") from None


def local_ray_env() -> dict:
    """:data:`LOCAL_RAY_ENV` less the variables the user set."""
    return {key: value for key, value in LOCAL_RAY_ENV.items() if key not in os.environ}


@contextlib.contextmanager
def _environment(variables: dict):
    """Set ``variables`` in this process's environment for a ``with`` block (the processes started
    meanwhile inherit them), then remove them again."""
    os.environ.update(variables)
    try:
        yield
    finally:
        for key in variables:
            os.environ.pop(key, None)


def _tidy_sessions(keep: int) -> None:
    """Mark the session of the local Ray just started as hwl's, and remove hwl's finished ones beyond
    the newest ``keep`` (:mod:`harness.ray_sessions`)."""
    import ray

    session_dir = ray._private.worker._global_node.get_session_dir_path()
    try:
        mark_session(session_dir)
    except OSError as exc:  # then it is only never removed
        log.warning("could not mark the Ray session folder %s as hwl's: %s", session_dir, exc)
    prune_sessions(session_dir, keep)


def _warn_hosts_no_node_offers(hosts) -> None:
    """A device actor waits for a node with its host resource (by design: a host that restarts comes
    back), so a host that no node of the cluster offers at all would stall its devices without a word."""
    import ray

    offered = set(ray.cluster_resources())
    for host in sorted(set(hosts) - offered):
        log.warning("no node of the Ray cluster offers the resource %s, so the devices whose [host] name is %r "
                    "wait for one: start that host's node with --resources '{\"%s\": 1}' (for ssh and command "
                    "devices, the node that reaches them, the coordinator's say)", host, host.split(":", 1)[-1],
                    host)


def _ray_processes_started_here() -> list:
    """Ray's daemons among this process's descendants (gcs_server, raylet, their agents)."""
    import psutil
    import ray

    ray_dir = os.path.dirname(ray.__file__)
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.name().startswith("ray::") or any(ray_dir in part for part in proc.cmdline()[:3]):
                found.append(proc)
    return found


def _stop_half_started_ray() -> None:
    """ray.init stopped half-way (an error, or for a caller without a SIGTERM handler of its own
    a SIGTERM through Ray's handler) leaves daemons that ray.shutdown does not know of, and the
    raylet goes on starting its agents. They are frozen first, so none starts another (its
    orphans would escape), then killed."""
    import psutil

    frozen = {}
    while new := [p for p in _ray_processes_started_here() if p.pid not in frozen]:
        for proc in new:
            frozen[proc.pid] = proc  # also one already gone, or the loop would see it again
            with contextlib.suppress(psutil.Error):
                proc.suspend()
    for proc in frozen.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(list(frozen.values()), timeout=5)


@contextlib.contextmanager
def _signals_held():
    """Around ray.init and ray.shutdown, which must not be stopped half-way: a Ctrl-C in ray.init left Ray's
    helper processes running, or crashed the driver (SIGSEGV) as it shut down. Ctrl-C and SIGTERM are
    held until the block ends, then handed to the caller's handlers (the CLI's clean stop), so
    ray_session stops a whole Ray. Ray's own SIGTERM handler (``sys.exit(15)`` wherever ray.init
    is, even where Python ignores the exception, which lost the signal) is kept out meanwhile."""
    import ray._private.utils as ray_utils

    main = threading.current_thread() is threading.main_thread()
    if not main:  # signal handlers belong to the main thread
        yield
        return
    held = []

    def hold(signum, frame):
        held.append(signum)

    # SIGTERM only where the caller handles it (the CLI); elsewhere Ray's handler stays as Ray has it
    term_handled = callable(signal.getsignal(signal.SIGTERM))
    sigs = (signal.SIGINT, signal.SIGTERM) if term_handled else (signal.SIGINT,)
    before = {sig: signal.signal(sig, hold) for sig in sigs}
    rays_own = getattr(ray_utils, "set_sigterm_handler", None) if term_handled else None
    if rays_own is not None:
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if rays_own is not None:
            ray_utils.set_sigterm_handler = rays_own
        for sig, handler in before.items():
            signal.signal(sig, handler)
    for sig in dict.fromkeys(held):  # in arrival order, each once
        if callable(before[sig]):
            before[sig](sig, None)  # the CLI's raise; Python's Ctrl-C default raises KeyboardInterrupt
        elif before[sig] == signal.SIG_DFL:
            os.kill(os.getpid(), sig)


# HTTP/2's client connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS) answers with a
# SETTINGS frame of its own (RFC 9113, 3.4)
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``host:port`` that nothing answers, or that answers but is no gRPC server, so no Ray GCS
    (Ray itself waits minutes for a GCS, and for a server that is no Ray, for ever, Ctrl-C held meanwhile)."""
    # a Ray Client address (ray://host:port) is a gRPC server too; "auto" or a bare name Ray resolves itself
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # an IPv6 host, [::1]:6379; its brackets are no part of its name
        host = host[1:-1]
    if not host or not port.isdigit():
        if address.startswith("ray://") or ("://" not in address and address not in ("auto", "local")):
            # ray:// with no port waited out Ray Client's 30 s retry loop; HOST alone was a traceback of Ray's
            raise ClusterError(f"cannot join the Ray cluster at {address!r}: it names no port; give the one the head "
                               f"serves, as {_start_head(address)} starts it, or {_run_locally()}")
        return
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: nothing answers there ({exc}). Start "
                           f"it with {_start_head(address)} on that machine, or {_run_locally()}") from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false", ""):  # a TLS GCS needs its handshake first
            if not _answers_http2(sock, timeout_s):
                raise ClusterError(f"cannot join the Ray cluster at {address!r}: something accepts connections "
                                   "there but does not answer as a Ray head does (gRPC); check the port: the head "
                                   f"serves it once started with {_start_head(address)}")


def _answers_http2(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server on ``sock`` answers HTTP/2's connection preface with a SETTINGS frame."""
    sock.settimeout(timeout_s)
    head = b""
    try:
        sock.sendall(_HTTP2_PREFACE)
        while len(head) < 9:  # a frame header: length (3 bytes), type, flags, stream id (4)
            chunk = sock.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:  # a reset, or no answer within the timeout
        return False
    return head[3] == _SETTINGS_FRAME


def device_actor_name(device: str) -> str:
    """The name of this driver's actor for a device (see :func:`device_actor`)."""
    import ray

    return f"device:{device}:job-{ray.get_runtime_context().get_job_id()}"


def device_actor(profile: DeviceProfile):
    """The named actor of a device for this driver (an existing one of this driver is reused:
    ``get_if_exists``). Two campaigns on one cluster get their own actors: an actor measures with
    its own profile's settings, and a campaign kills its actors when it ends. The device itself
    is still measured by one at a time (its lock on this host, the agent's lock on an ssh device)."""
    return _device_worker_class().options(name=device_actor_name(profile.name), namespace=NAMESPACE,
                                          get_if_exists=True, max_restarts=0, max_task_retries=0, num_cpus=0,
                                          resources={profile.host.resource: 0.001}).remote(profile.to_dict())


@functools.cache
def _device_worker_class():
    """One Ray actor class for every device actor (see :func:`export_remote` on why only one)."""
    import ray

    return ray.remote(concurrency_groups={"status": 1})(DeviceWorker)


def ask_status(actor):
    """The ref of a device actor's status, asked through its own concurrency group (never behind a measurement):
    read it once it is ready, so a device that does not answer holds up no other."""
    return actor.status.options(concurrency_group="status").remote()


def actor_status(actor, timeout_s: float = 10.0) -> dict:
    """A device actor's status (:func:`ask_status`), waited for up to ``timeout_s``."""
    import ray

    return ray.get(ask_status(actor), timeout=timeout_s)


def this_node_alive() -> bool:
    """Whether Ray's node on this machine (the coordinator's) is up: without it no actor or task
    of this process can run, so a campaign cannot go on."""
    import ray

    me = ray.get_runtime_context().get_node_id()
    try:
        return any(n["NodeID"] == me and n["Alive"] for n in ray.nodes())
    except Exception:  # Ray's control service is gone too
        return False


def export_task(key: tuple, artifact_dir: str) -> dict:
    """Export one model (a Ray task); returns where it is and the sha256 of the file.

    The sha256 shipped is of bytes that still hash to the artifact's address (the bytes the export
    wrote): read again after the export, a file changed in between would otherwise go out under the
    changed file's hash, and the agent, which checks only that hash, would run it. Such a file is
    exported again, once."""
    from harness.artifacts import content_sha256
    from harness.export import ExportConfig, ExportError, cached_record, export_one

    space, arch, dataset, batch_size = key
    arch = int(arch) if space == "nb201" else arch
    config = ExportConfig.make(space, arch, dataset, batch_size)
    rec = cached_record(config, artifact_dir, verify=False)  # the bytes read below are checked, once
    for _ in range(2):
        if rec is None:  # torch only for a model not exported yet: importing it takes seconds of a worker
            import torch

            torch.set_num_threads(1)
            rec = export_one(space, arch, artifact_dir, dataset=dataset, batch_size=batch_size)
        data = Path(rec.path).read_bytes()
        if content_sha256(data, config.to_dict()) == rec.sha256:
            return {"path": rec.path, "sha256": hashlib.sha256(data).hexdigest(), "artifact_sha256": rec.sha256,
                    "size_bytes": len(data), "export_s": rec.export_s}
        path, rec = rec.path, None  # export_one finds the stored file corrupt and writes it again
    raise ExportError(f"the model file {path} changed again right after it was exported again; is something else "
                      "writing to the artifact folder?")


@functools.cache
def export_remote():
    """:func:`export_task` as a Ray remote function, made once: each ``ray.remote`` wrapper is a
    function of its own to Ray (its own id), so one made per export registered a function in the GCS
    for every job and had each worker load it again, and both kept them all."""
    import ray

    return ray.remote(num_cpus=1, max_retries=0)(export_task)
