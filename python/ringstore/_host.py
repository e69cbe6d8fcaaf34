# SPDX-License-Identifier: MIT
"""A rendezvous that hosts its own store: start ringstore for the job.

``torchrun --rdzv-backend=ringstore --rdzv-endpoint=HOST:PORT`` on the
machine HOST names needs a store on PORT. If nothing listens there, the agent
starts the ringstore server that came with this package (``ringstore.
server_path()``), as c10d's backend starts its TCPStore, except that the
store is a process of its own, not a thread of the agent:

* detached: its own session (``setsid``), stdin from /dev/null, stdout and
  stderr to a log file, no inherited descriptors, so it outlives the agent,
  the agent's restarts and a Ctrl-C in the agent's terminal;
* with a data dir, so that a store that crashes during the job and is
  started again by a new agent replays what it held;
* with ``--idle-exit``, so that it ends once no client has been connected
  for a while after the job.

:func:`ensure_store_for` is what the rendezvous handler calls, once, when it
is created (never when it reconnects: a store that went away mid-job is
waited for, and a new one in the gap would take the port and never replay the
old one's data). :func:`ensure_store` is the same with plain arguments.

Whether this machine hosts: c10d's rule, ``_matches_machine_hostname(HOST)``
(``localhost``, a loopback address, this machine's hostname, FQDN or one of
its addresses), unless ``--rdzv-conf is_host=`` says so either way (parsed
by ``RendezvousParameters.get_as_bool``, as c10d does).

Whether a store is already there: anything that accepts a TCP connection on
PORT (at HOST, or at localhost) counts, and is used as it is. A store that an
agent did not start is never stopped by one; this module starts processes
and never kills any.

Where things live: one directory per job, under the state directory,

  ``$RINGSTORE_STATE_DIR``, else ``$XDG_STATE_HOME/ringstore``, else
  ``~/.local/state/ringstore`` (``--rdzv-conf state_dir=`` overrides all)
  ``<state>/<run id>/data/``          the store's data dir (--data-dir)
  ``<state>/<run id>/ringstore.log``  its stdout and stderr, appended
  ``<state>/<run id>/host.lock``      agents on this host take turns here
  ``<state>/<run id>/data.previous/`` the data of the last store that ended
                                      by --idle-exit (see below)

so one job never replays another's rounds. A run id that is not a plain file
name (``[A-Za-z0-9_.-]``, not starting with a dot, at most 64 characters) is
cleaned and suffixed with a hash of the original: distinct run ids get
distinct directories.

Agents racing on one host: those of one job (one state dir) take
``host.lock`` in turn, so the first starts the store and waits for it to
listen, and the others find it listening. Agents that do not share the lock
(other state dirs, other users) may each start one; the server allows one
store per port and one per data dir, so all but one exit at once ("Address
already in use", "is in use by another ringstore"), and their agents wait for
the port like the others.

A store that ended because its job did (the last line of the log's last
store is "--idle-exit: shutting down") is not replayed: the next store of
that run id starts empty and its data dir is kept as ``data.previous``.
Otherwise a second ``torchrun`` with the same ``--rdzv-id`` (torchrun's
default is "none") would replay the first run's closed rendezvous. A store
that was killed or crashed left no such line, and is replayed.

Nothing here imports torch at import time.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field

from ringstore._server import server_path

__all__ = [
    "CONF_KEYS",
    "HostedStore",
    "StoreStartError",
    "ensure_store",
    "ensure_store_for",
    "job_dir",
    "listener_pids",
    "state_root",
]

log = logging.getLogger(__name__)

# --idle-exit of a store an agent starts. While the job runs the store always
# has clients: every agent holds its handler's connection for its whole life
# (across worker restarts), and the host's own agent is one of them. So the
# timer only runs once every agent is gone: after the job, or when all of
# them died at once. 300 s lets a relaunch of the whole job after such a
# failure (a requeue, a node reboot) find the same store, and outlasts the
# server's keepalive detection of a vanished peer (60 s plus 4 probes); the
# store is gone five minutes after the job. A store that ended this way is
# not replayed anyway (see the module docstring).
IDLE_EXIT = 300
# Seconds to wait for the store to listen: it replays its data dir first.
START_TIMEOUT = 60.0
FSYNC_MODES = ("always", "everysec", "no")
# The --rdzv-conf keys ensure_store_for() reads (is_host is c10d's).
CONF_KEYS = ("is_host", "state_dir", "idle_exit", "fsync", "start_timeout")

LOG_NAME = "ringstore.log"
LOCK_NAME = "host.lock"
DATA_NAME = "data"
PREVIOUS_NAME = "data.previous"

_LISTENING = "ringstore listening on "
_IDLE_EXIT = "(--idle-exit): shutting down"
# What a server prints when another one holds its port or its data dir.
_BUSY = ("Address already in use", "is in use by another ringstore")
_PROBE_TIMEOUT = 1.0
_POLL = 0.05


class StoreStartError(RuntimeError):
    """This machine should host the store and none could be started."""


@dataclass(frozen=True)
class HostedStore:
    """The store an agent uses on its own host.

    ``started`` is True when this call started it (``pid``, ``data_dir``
    and ``log_path`` are then its own); False when a store was already
    listening (``pid`` is the listener's if /proc shows it, else None).
    """

    host: str
    port: int
    started: bool
    pid: int | None = None
    data_dir: str | None = None
    log_path: str | None = None
    # The Popen of a store this process started (to reap it, in tests).
    proc: subprocess.Popen | None = field(default=None, repr=False,
                                          compare=False)


def state_root(state_dir: str | None = None) -> str:
    """The state directory: @state_dir, else $RINGSTORE_STATE_DIR, else
    $XDG_STATE_HOME/ringstore (if absolute, as the XDG spec wants), else
    ~/.local/state/ringstore."""
    if state_dir:
        return os.path.abspath(os.path.expanduser(state_dir))
    if os.environ.get("RINGSTORE_STATE_DIR"):
        return os.path.abspath(os.environ["RINGSTORE_STATE_DIR"])
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(xdg):
        xdg = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(xdg, "ringstore")


def job_dir(run_id: str, state_dir: str | None = None) -> str:
    """The directory of job @run_id under the state directory."""
    if not run_id:
        raise ValueError("the run id must be a non-empty string")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    if name != run_id or name.startswith(".") or len(name) > 64:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
        name = f"{name.lstrip('.')[:64] or 'run'}-{digest}"
    return os.path.join(state_root(state_dir), name)


def _accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at @host:@port."""
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def _listening(host: str, port: int) -> bool:
    """Whether a store listens on @port of this machine: at the endpoint's
    @host (what clients will dial) or at localhost (a store bound only to
    loopback, or an endpoint name that does not lead back here)."""
    return _accepts("localhost", port) or (host != "localhost"
                                            and _accepts(host, port))


def listener_pids(port: int) -> set[int]:
    """Pids of the processes with a TCP socket listening on @port (from
    /proc/net/tcp{,6}; only the processes this user may inspect)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # local_address is ADDR:PORT in hex; state 0A is LISTEN
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                inodes.add(f"socket:[{cols[9]}]")
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc") if inodes else ()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                   for fd in fds):
                pids.add(int(pid))
        except OSError:
            continue  # gone, or not ours to inspect
    return pids


def _read_from(path: str, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _retire_ended_data(job: str) -> None:
    """Keep the data of a store that ended by --idle-exit as data.previous,
    so that the next one starts empty. Only if the log's last store said so
    after it listened, and no process holds the data dir's lock."""
    data = os.path.join(job, DATA_NAME)
    try:
        with open(os.path.join(job, LOG_NAME), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return
    if text.rfind(_IDLE_EXIT) <= max(text.rfind(_LISTENING), -1):
        return
    try:
        fd = os.open(os.path.join(data, "LOCK"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # a server holds it (it has not exited yet)
    try:
        previous = os.path.join(job, PREVIOUS_NAME)
        shutil.rmtree(previous, ignore_errors=True)
        os.rename(data, previous)
    finally:
        os.close(fd)
    log.info("ringstore: the last store of %s ended after its job "
             "(--idle-exit); starting an empty one (its data is in %s)",
             job, previous)


class _JobLock:
    """``host.lock`` of a job dir, held while one agent looks for a store and
    starts one: an flock, so a dead agent's turn ends with it."""

    def __init__(self, job: str, deadline: float):
        self._fd = os.open(os.path.join(job, LOCK_NAME),
                           os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    raise StoreStartError(
                        f"another agent has been starting the store of "
                        f"{job} for too long (it holds "
                        f"{os.path.join(job, LOCK_NAME)})") from None
                time.sleep(_POLL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self._fd)


def _found(host: str, port: int, why: str) -> HostedStore:
    pids = listener_pids(port)
    pid = next(iter(pids)) if len(pids) == 1 else None
    log.info("ringstore: %s a store listening on port %d (pid %s); using it, "
             "and never stopping it", why, port, pid or "unknown")
    return HostedStore(host, port, started=False, pid=pid)


def _spawn(host: str, port: int, job: str, idle_exit: int, fsync: str,
           deadline: float) -> HostedStore:
    """Start the server in @job and wait until it (or another) listens."""
    try:
        binary = server_path()
    except FileNotFoundError as e:
        raise StoreStartError(
            f"this machine hosts the rendezvous store on port {port} and "
            f"nothing listens there, but there is no ringstore server to "
            f"start: {e}. Install the package on every node "
            f"(pip install ringstore), or start a store yourself "
            f"(ringstore --port {port}) before torchrun, or pass "
            f"--rdzv-conf is_host=false if another machine hosts it") from None
    data = os.path.join(job, DATA_NAME)
    logpath = os.path.join(job, LOG_NAME)
    args = [binary, "--port", str(port), "--data-dir", data,
            "--fsync", fsync, "--idle-exit", str(idle_exit)]
    with open(logpath, "ab") as out:
        offset = out.seek(0, os.SEEK_END)
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, cwd=job, close_fds=True,
                                start_new_session=True)
    busy = False  # it exited because another store holds the port or dir
    while True:
        text = _read_from(logpath, offset)
        if proc.poll() is None and _LISTENING in text:
            log.info("ringstore: started a store for this job: pid %d, "
                     "port %d, data dir %s, log %s (it exits %s)",
                     proc.pid, port, data, logpath,
                     f"{idle_exit} s after its last client leaves"
                     if idle_exit else "only when stopped: idle_exit=0")
            return HostedStore(host, port, True, proc.pid, data, logpath,
                               proc)
        if proc.returncode is not None and not busy:
            text = _read_from(logpath, offset)  # all it wrote
            busy = any(m in text for m in _BUSY)
            if not busy:
                raise StoreStartError(
                    f"the ringstore started for port {port} ({binary}) "
                    f"exited with status {proc.returncode}; the end of "
                    f"{logpath}:\n{_tail(text)}")
        if busy and _listening(host, port):
            return _found(host, port, "another process started")
        if time.monotonic() >= deadline:
            state = "another store holds its port or data dir" if busy \
                else "it is still starting"
            raise StoreStartError(
                f"no store listens on port {port} after the start timeout: "
                f"the ringstore started for it (pid {proc.pid}) did not "
                f"listen ({state}); the end of {logpath}:\n"
                f"{_tail(_read_from(logpath, offset))}")
        time.sleep(_POLL)


def ensure_store(host: str, port: int, run_id: str, *,
                 is_host: bool | None = None, state_dir: str | None = None,
                 idle_exit: int = IDLE_EXIT, fsync: str = "everysec",
                 timeout: float = START_TIMEOUT) -> HostedStore | None:
    """Make sure a store listens on @port if this machine hosts it.

    Returns None if this machine does not host the store of @host:@port
    (c10d's rule, or @is_host when given); otherwise the store now
    listening there: one found (``started=False``, left alone) or one this
    call started (``started=True``). Raises StoreStartError if none could be
    started within @timeout seconds (with the end of the store's log), and
    ValueError for bad arguments. @idle_exit is the store's --idle-exit in
    seconds (0: it never exits by itself); @fsync its --fsync.
    """
    if is_host is None:
        from torch.distributed.elastic.rendezvous.utils import \
            _matches_machine_hostname
        is_host = _matches_machine_hostname(host)
    if not is_host:
        return None
    if not 0 < port < 65536:
        raise ValueError(f"cannot host a store on port {port}: the "
                         f"rendezvous endpoint needs a fixed port")
    if fsync not in FSYNC_MODES:
        raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, "
                         f"not {fsync!r}")
    if int(idle_exit) != idle_exit or idle_exit < 0:
        raise ValueError(f"idle_exit must be a whole number of seconds "
                         f"(0: never), not {idle_exit!r}")
    if not timeout > 0:
        raise ValueError(f"the start timeout must be positive: {timeout!r}")
    deadline = time.monotonic() + timeout
    if _listening(host, port):
        return _found(host, port, "found")
    job = job_dir(run_id, state_dir)
    os.makedirs(job, mode=0o700, exist_ok=True)
    with _JobLock(job, deadline):
        # the agent before us in the lock may have started it
        if _listening(host, port):
            return _found(host, port, "found")
        _retire_ended_data(job)
        return _spawn(host, port, job, int(idle_exit), fsync, deadline)


def ensure_store_for(params, *, default_port: int) -> HostedStore | None:
    """:func:`ensure_store` for torchrun's RendezvousParameters @params: the
    endpoint (with @default_port when it has none), the run id and the
    --rdzv-conf keys in CONF_KEYS:

    ``is_host``        bool (1/true/t/yes/y, 0/false/f/no/n): host or not,
                       whatever the endpoint says (c10d's key and parsing)
    ``state_dir``      the state directory (default: see state_root())
    ``idle_exit``      seconds, a whole number; 0: never (default 300)
    ``fsync``          always | everysec | no (default everysec)
    ``start_timeout``  seconds to wait for the store to listen (default 60)
    """
    from torch.distributed.elastic.rendezvous.utils import \
        parse_rendezvous_endpoint

    host, port = parse_rendezvous_endpoint(params.endpoint, default_port)
    try:
        timeout = float(params.get("start_timeout", START_TIMEOUT))
    except ValueError:
        raise ValueError("rdzv-conf start_timeout must be a number of "
                         "seconds") from None
    return ensure_store(host, port, params.run_id,
                        is_host=params.get_as_bool("is_host"),
                        state_dir=params.get("state_dir"),
                        idle_exit=params.get_as_int("idle_exit", IDLE_EXIT),
                        fsync=params.get("fsync", "everysec"),
                        timeout=timeout)
