# SPDX-License-Identifier: MIT
"""The ``ringstore`` rendezvous backend for torchrun (PyTorch 2.13 contract).

A :class:`RingstoreRendezvousHandler` implements torch's ``RendezvousHandler``
with round-scoped keys on a TCPStore *server* (ringstore, or PyTorch's own): it
only makes client calls (``torch.distributed.TCPStore(is_master=False)``), never
pickles store data and needs no opcode beyond PyTorch's. Every operation a node
performs costs O(1) requests and O(1) bytes whatever the number of nodes N,
except that the one node that closes a round reads the N heartbeats of that
round once (one WAIT and one MULTI_GET), and collects old rounds' keys.

The protocol (keys, value formats, the state machine as one table, and the
arguments for store restarts) is :mod:`ringstore._protocol`, which does no
I/O. This module drives it over a :class:`ringstore._client.ResilientClient`
(a TCPStore client that reconnects after a store restart and never re-sends
a write that is not safe to repeat) and glues it to torchrun: the heartbeat
thread, ``RendezvousInfo`` with the agents' reconnecting store
(:class:`ringstore._client.AgentStore`), and the workers' key prefix
(``RINGSTORE_WORKER_PREFIX``, applied by :mod:`ringstore._worker_hook`).
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
from itertools import count


# The two entry-point functions come before the torch imports: importing
# torch.distributed.elastic.rendezvous loads the torchrun.handlers entry
# points, so a program that imports this module first (before torch's
# rendezvous package) is asked for torchrun_handler while this module is
# still half-imported.
def create_handler(params):
    """The handler creator torchrun's registry calls with the --rdzv-* parameters.

    Once, before the handler connects (never when it reconnects): if the
    endpoint is this machine (c10d's rule; ``is_host`` decides either way) and
    nothing listens on its port, start the bundled ``ringstore`` for this job,
    detached (:mod:`ringstore._host`). A store that goes away later is
    reconnected to, never replaced.
    """
    from ringstore._host import StoreStartError, ensure_store_for

    try:
        ensure_store_for(params, default_port=DEFAULT_PORT)
    except StoreStartError as e:
        raise RendezvousConnectionError(f"ringstore rendezvous: {e}") from e
    return RingstoreRendezvousHandler(params)


def torchrun_handler():
    """Entry point of the ``torchrun.handlers`` group: returns the creator.

    torch's registry calls ``entry_point.load()()`` and registers the result,
    so this returns the same function every time (re-registering an equal
    creator is allowed; a different one is not).
    """
    return create_handler


import torch.distributed as dist  # noqa: E402
from torch.distributed.elastic.rendezvous.api import (  # noqa: E402
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousStoreInfo,
    RendezvousTimeoutError,
)
from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint  # noqa: E402

from ._client import (  # noqa: E402
    AgentStore,
    ResilientClient,
    StoreUnreachable,
    _torch_args,
    execute,
    tcp_connector,
)
from ._protocol import (  # noqa: E402
    Clock,
    Closed,
    Config,
    Join,
    Keys,
    Member,
    ProtocolError,
    Restarted,
    StoreTimeout,
    TimedOut,
    WaitTimeout,
    collect,
    run_ops,
)

__all__ = [
    "BACKEND_NAME",
    "WORKER_PREFIX_ENV",
    "RingstoreRendezvousHandler",
    "create_handler",
    "torchrun_handler",
]

log = logging.getLogger(__name__)

BACKEND_NAME = "ringstore"
DEFAULT_PORT = 29500  # scripts/serve's port
WORKER_PREFIX_ENV = "RINGSTORE_WORKER_PREFIX"

# --rdzv-conf keys and their defaults (torch's where the c10d backend has one).
DEFAULTS = {
    "join_timeout": 600.0,
    "last_call_timeout": 30.0,
    "close_timeout": 30.0,
    "heartbeat_timeout": 5.0,
    "read_timeout": 60.0,
    "keep_alive_interval": 5.0,
    "keep_alive_max_attempt": 3,
    "reconnect_timeout": 60.0,
    "commit_wait": 2.0,
}
MAY_BE_ZERO = ("commit_wait",)
# Accepted for compatibility with other backends' command lines, and unused:
# the store is always a TCPStore server, and join_timeout bounds the join.
# (is_host and the hosting keys are _host.py's.)
IGNORED = ("store_type", "timeout")

_local_ids = count()


class _Heartbeats:
    """One handler's heartbeat thread and its stop event.

    The thread is a daemon (an agent that never calls shutdown() must still
    exit), so it has to be stopped and joined before the interpreter
    finalizes: a daemon thread that returns from a store request (C++ with
    the GIL released) after finalization began is ended by pthread_exit,
    whose unwinding through pybind11's noexcept frames calls
    std::terminate (an agent aborted with SIGABRT at exit, about one run in
    ten of test_elastic_scale_up). stop() joins it; an atexit hook, which
    runs before finalization, stops every one still running.
    """

    _live: set[_Heartbeats] = set()
    _lock = threading.Lock()

    def __init__(self, beat, interval: float, join_timeout: float, name: str):
        self._event = threading.Event()
        self._join_timeout = join_timeout
        self._thread = threading.Thread(target=self._run, args=(beat, interval),
                                        name=name, daemon=True)
        with self._lock:
            self._live.add(self)
        self._thread.start()

    def _run(self, beat, interval: float) -> None:
        while not self._event.wait(interval):
            if not beat():
                return

    def stop(self) -> None:
        """Stop and join: no beat is in flight once this returns (unless one
        outlasts the store's own timeout)."""
        self._event.set()
        if self._thread is not threading.current_thread():
            self._thread.join(self._join_timeout)
        with self._lock:
            self._live.discard(self)

    @classmethod
    def stop_all(cls) -> None:
        with cls._lock:
            live = list(cls._live)
        for hb in live:
            hb.stop()


atexit.register(_Heartbeats.stop_all)


class RingstoreRendezvousHandler(RendezvousHandler):
    """See the module docstring. One TCPStore client connection per handler,
    plus one for the agents' store of the current round.

    ``store`` may be given (tests, benchmarks) as the first connection;
    reconnects always dial ``params.endpoint``. ``clock`` replaces the
    system clock. Thread-safety: torchrun calls the handler from one thread;
    the heartbeat thread shares the client, whose requests PyTorch
    serializes with a per-client lock.
    """

    def __init__(self, params: RendezvousParameters, store=None, clock: Clock | None = None):
        if not params.run_id:
            raise ValueError("The run id must be a non-empty string.")
        self._run_id = params.run_id
        self._min = params.min_nodes
        self._max = params.max_nodes
        cfg = {}
        for key, default in DEFAULTS.items():
            value = params.get(key)
            try:
                cfg[key] = type(default)(value) if value is not None else default
            except ValueError as e:
                raise ValueError(f"rdzv-conf {key}={value!r} is not a number") from e
            if cfg[key] < 0 or (cfg[key] == 0 and key not in MAY_BE_ZERO):
                raise ValueError(f"rdzv-conf {key} must be positive, not {value!r}")
        from ringstore._host import CONF_KEYS as HOST_KEYS  # create_handler's

        unknown = set(params.config) - set(DEFAULTS) - set(IGNORED) - set(HOST_KEYS)
        if unknown:
            log.warning("ringstore rendezvous: ignoring unknown rdzv-conf keys %s", sorted(unknown))
        self._interval = cfg["keep_alive_interval"]
        self._read_timeout = cfg["read_timeout"]
        self._reconnect_timeout = cfg["reconnect_timeout"]
        self._cfg = Config(
            min_nodes=self._min, max_nodes=self._max, join_timeout=cfg["join_timeout"],
            last_call=cfg["last_call_timeout"], interval=self._interval,
            # a node whose heartbeat is older than this is dead (the c10d rule)
            dead_after=cfg["keep_alive_interval"] * cfg["keep_alive_max_attempt"],
            commit_wait=cfg["commit_wait"])
        self._clock = clock or Clock()

        self._host, self._port = parse_rendezvous_endpoint(params.endpoint, DEFAULT_PORT)
        addr = params.local_addr or socket.getfqdn()
        self._who = f"{addr} {os.getpid()} {next(_local_ids)} {secrets.token_hex(3)}"
        self._keys = Keys(self._run_id)
        self._seq = count(1)
        self._client = self._new_client(f"ringstore rendezvous {self._run_id}", store)
        self._round: int | None = None  # the round this node is a member of
        self._slot = 0  # its arrival number in that round
        self._world = 0
        self._member: Member | None = None
        self._agent_store: AgentStore | None = None
        self._hb: _Heartbeats | None = None

    def _new_client(self, name: str, store=None) -> ResilientClient:
        try:
            return ResilientClient(tcp_connector(self._host, self._port), self._reconnect_timeout,
                                   self._read_timeout, self._clock, store=store, name=name)
        except (ValueError, RuntimeError, TimeoutError) as e:
            raise RendezvousConnectionError(
                f"cannot connect to the ringstore at {self._host}:{self._port}") from e

    # -------------------------------------------------------------- I/O
    def _call(self, op: str, *args):
        """One protocol request (an Op of ringstore._protocol), sent once."""
        return self._client.call(op, *_torch_args(op, args), resend=False)

    def _drive(self, gen):
        """Execute a protocol generator: its requests, its sleeps, and the
        exceptions the protocol expects (Restarted after any reconnect, by
        this thread or another; WaitTimeout; StoreTimeout)."""
        seen = self._client.generation
        value, exc = None, None
        while True:
            try:
                op = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration as e:
                return e.value
            value, exc = None, None
            if self._client.generation != seen:
                seen = self._client.generation
                exc = Restarted()
                continue
            kind, args = op
            if kind == "sleep":
                self._clock.sleep(args[0])
                continue
            try:
                value = self._call(kind, *args)
            except Restarted as e:
                seen = self._client.generation
                exc = e
            except dist.DistStoreError as e:
                exc = WaitTimeout(str(e)) if kind == "wait" else StoreTimeout(str(e))
            except StoreUnreachable as e:
                gen.close()
                raise RendezvousConnectionError(f"ringstore rendezvous: {e}") from e

    def _plain(self, op: str, *args):
        """A request that is safe to re-send (a read, or closed's one value)."""
        try:
            return self._client.call(op, *args, resend=True)
        except dist.DistStoreError as e:
            raise RendezvousConnectionError(f"ringstore rendezvous: store {op} timed out") from e
        except StoreUnreachable as e:
            raise RendezvousConnectionError(f"ringstore rendezvous: {e}") from e

    # ------------------------------------------------------ handler contract
    def get_backend(self) -> str:
        return BACKEND_NAME

    @property
    def use_agent_store(self) -> bool:
        # Workers get TORCHELASTIC_USE_AGENT_STORE=True: every rank is a pure
        # client of MASTER_ADDR:MASTER_PORT, which is this same store server.
        return True

    def get_run_id(self) -> str:
        return self._run_id

    def is_closed(self) -> bool:
        return bool(self._plain("check", [self._keys.closed]))

    def set_closed(self) -> None:
        # the key only ever holds "1": re-sending it is harmless
        self._plain("set", self._keys.closed, "1")

    def num_nodes_waiting(self) -> int:
        """Arrivals in the round after ours; 0 if our round is full (max nodes)."""
        if self._round is None or self._world >= self._max:
            return 0
        return int(self._plain("add", self._keys.n(self._round + 1), 0))

    def shutdown(self) -> bool:
        self._stop_heartbeats()
        member, self._member = self._member, None
        self._client.set_hook("member", None)
        self._retire_agent_store()
        try:
            if member is not None:
                self._drive(member.leave())
            self.set_closed()
        except RendezvousError as e:
            log.warning("ringstore rendezvous %s: shutdown failed: %s", self._run_id, e)
            return False
        if member is not None:
            # the last node out collects its own round as well
            try:
                n = self._drive(collect(self._keys, member.r, self._who, self._clock,
                                        self._cfg.dead_after, patient=True))
                log.info("ringstore rendezvous %s: shutdown collected %d keys", self._run_id, n)
            except (RendezvousError, Restarted, StoreTimeout, ProtocolError) as e:
                log.info("ringstore rendezvous %s: collection on shutdown skipped: %s",
                         self._run_id, e)
        return True

    def next_rendezvous(self) -> RendezvousInfo:
        self._stop_heartbeats()
        prev, self._member = self._member, None
        self._client.set_hook("member", None)
        self._retire_agent_store()
        self._round = None
        join = Join(self._keys, self._cfg, self._who, self._clock, prev=prev, seq=self._seq)
        try:
            r, rank, world, member = self._drive(join.run())
        except Closed:
            raise RendezvousClosedError(f"the rendezvous '{self._run_id}' is closed") from None
        except TimedOut:
            raise RendezvousTimeoutError(
                f"round {join.r} of the rendezvous '{self._run_id}' did not complete "
                f"within join_timeout={self._cfg.join_timeout:g}s") from None
        except ProtocolError as e:
            raise RendezvousStateError(f"ringstore rendezvous: {e}") from e
        except StoreTimeout as e:
            raise RendezvousConnectionError(f"ringstore rendezvous: store timed out: {e}") from e
        self._member, self._round, self._slot, self._world = member, r, member.a, world
        if join.dead_at_close:
            log.warning("ringstore rendezvous %s: round %d closed without dead arrivals %s",
                        self._run_id, r, join.dead_at_close)
        self._client.set_hook("member", self._restore_member)
        self._start_heartbeats()
        log.info("ringstore rendezvous %s: round %d, rank %d of %d (arrival %d)",
                 self._run_id, r, rank, world, member.a)
        # inherited by the workers torchrun starts next (see _worker_hook.py)
        os.environ[WORKER_PREFIX_ENV] = self._keys.worker(r)
        self._agent_store = AgentStore(self._keys.agent(r), self._new_client(
            f"ringstore agent store {self._run_id}/{r}"))
        return RendezvousInfo(self._agent_store, rank, world,
                              RendezvousStoreInfo(self._host, self._port))

    def _retire_agent_store(self) -> None:
        if self._agent_store is not None:
            self._agent_store.retire()
            self._agent_store = None

    def _restore_member(self, store) -> None:
        """Reconnect hook: re-publish what this member acted on (Member.restore)."""
        member = self._member
        if member is None:
            return
        ok = run_ops(member.restore(), lambda op: execute(store, op, StoreTimeout, WaitTimeout))
        if not ok:
            log.error("ringstore rendezvous %s: after a store restart, round %d's result or "
                      "slot %d is no longer this node's: the store lost state it had "
                      "made durable", self._run_id, member.r, member.a)

    # ----------------------------------------------------------- heartbeats
    def _start_heartbeats(self) -> None:
        member = self._member

        def beat() -> bool:
            try:
                if self._drive(member.beat()):
                    return True
            except (Restarted, StoreTimeout):
                return True  # the reconnect hook re-published the slot
            except RendezvousError as e:
                # the store stayed away for reconnect_timeout: try again later
                log.warning("ringstore rendezvous %s: heartbeat failed: %s", self._run_id, e)
                return True
            log.error("ringstore rendezvous %s: slot %d of round %d is owned by another "
                      "node; stopping heartbeats", self._run_id, member.a, member.r)
            return False

        # A beat is one request, bounded by the client's read timeout (and
        # a reconnect by reconnect_timeout).
        self._hb = _Heartbeats(beat, self._interval,
                               self._read_timeout + self._reconnect_timeout + 1.0,
                               f"ringstore-rdzv-hb-{member.a}")

    def _stop_heartbeats(self) -> None:
        if self._hb is not None:
            self._hb.stop()
            self._hb = None

