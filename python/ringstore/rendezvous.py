# SPDX-License-Identifier: MIT
"""The ``ringstore`` rendezvous backend for torchrun (PyTorch 2.13 contract).

A :class:`RingstoreRendezvousHandler` implements torch's ``RendezvousHandler``
with round-scoped keys on a TCPStore *server* (ringstore, or PyTorch's own): it
only makes client calls (``torch.distributed.TCPStore(is_master=False)``), never
pickles store data and needs no opcode beyond PyTorch's. Every operation a node
performs costs O(1) requests and O(1) bytes whatever the number of nodes N,
except that the one node that closes a round reads the N heartbeats of that
round once (one WAIT and one MULTI_GET). Nodes learn their rank from a single
O(1)-sized "done" value, not from a membership list.

Keys (TCPStore user keys; the client puts its own "/" in front):

  rdzv/<run>/closed         exists once the rendezvous is closed
  rdzv/<run>/round          hint: the round a joiner tries first
  rdzv/<run>/<r>/n          arrival counter of round r (ADD 1 = arrival number a)
  rdzv/<run>/<r>/hb/<a>     heartbeat of arrival a: "<epoch> <host> <pid> <id>",
                            or "left ..." once it gave up on the round
  rdzv/<run>/<r>/lc         last call: "<deadline epoch> <a of the setter>"
  rdzv/<run>/<r>/lease      closer lease: "<a> <epoch>" ("" when released)
  rdzv/<run>/<r>/done       the round's result: "<K>" or "<K> <d1>,<d2>,...":
                            arrivals 1..K minus the dead ones d_i are members
  rdzv/<run>/<r>/agent/...  RendezvousInfo.store (the agents' own keys)
  rdzv/<run>/<r>/worker/... the workers' env:// store (RINGSTORE_WORKER_PREFIX,
                            applied by ringstore._worker_hook)

The state machine and the race arguments are in the package's README.md.
Ranks are arrival order: rank = a - 1 - (dead slots below a). Heartbeat ages
compare wall clocks of different hosts, as the c10d backend's do.
"""

from __future__ import annotations

import logging
import atexit
import os
import socket
import threading
import time
from datetime import timedelta
from itertools import count

import torch.distributed as dist
from torch.distributed.elastic.rendezvous.api import (
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
from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

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
}
# Accepted for compatibility with the c10d backend's command lines; unused
# because this backend never hosts a store and only uses TCP.
IGNORED = ("is_host", "store_type", "timeout")

_local_ids = count()


class _Result:
    """A parsed "done" value: arrivals 1..k minus the dead ones are members."""

    __slots__ = ("k", "dead")

    def __init__(self, raw: bytes):
        try:
            text = raw.decode()
            head, _, tail = text.partition(" ")
            self.k = int(head)
            self.dead = sorted(int(x) for x in tail.split(",")) if tail else []
        except ValueError as e:
            raise RendezvousStateError(f"corrupt round result {raw[:80]!r}") from e

    def member(self, a: int) -> tuple[int, int] | None:
        """(rank, world size) of arrival a, or None if a is not a member."""
        if a > self.k or a in self.dead:
            return None
        below = sum(1 for d in self.dead if d < a)
        return a - 1 - below, self.k - len(self.dead)


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
    """See the module docstring. One TCPStore client connection per handler.

    ``store`` may be given (tests, benchmarks); otherwise the handler connects
    to ``params.endpoint``. Thread-safety: torchrun calls the handler from one
    thread; the heartbeat thread shares the client, whose requests PyTorch
    serializes with a per-client lock.
    """

    def __init__(self, params: RendezvousParameters, store=None):
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
            if cfg[key] <= 0:
                raise ValueError(f"rdzv-conf {key} must be positive, not {value!r}")
        unknown = set(params.config) - set(DEFAULTS) - set(IGNORED)
        if unknown:
            log.warning("ringstore rendezvous: ignoring unknown rdzv-conf keys %s", sorted(unknown))
        self._join_timeout = cfg["join_timeout"]
        self._last_call = cfg["last_call_timeout"]
        self._interval = cfg["keep_alive_interval"]
        # a node whose heartbeat is older than this is dead (the c10d rule)
        self._dead_after = cfg["keep_alive_interval"] * cfg["keep_alive_max_attempt"]
        self._read_timeout = cfg["read_timeout"]

        self._host, self._port = parse_rendezvous_endpoint(params.endpoint, DEFAULT_PORT)
        self._addr = params.local_addr or socket.getfqdn()
        self._desc = f"{self._addr} {os.getpid()} {next(_local_ids)}"
        if store is None:
            try:
                store = dist.TCPStore(self._host, self._port, is_master=False,
                                      wait_for_workers=False,
                                      timeout=timedelta(seconds=self._read_timeout))
            except (ValueError, RuntimeError, TimeoutError) as e:
                raise RendezvousConnectionError(
                    f"cannot connect to the ringstore at {self._host}:{self._port}") from e
        self._store = store
        self._base = f"rdzv/{self._run_id}/"
        self._round: int | None = None  # the round this node is a member of
        self._slot = 0  # its arrival number in that round
        self._world = 0
        self._hb: _Heartbeats | None = None

    # ---------------------------------------------------------------- keys
    def _k(self, r: int, *parts) -> str:
        return self._base + "/".join([str(r), *map(str, parts)])

    def _call(self, op: str, *args, timeout_ok: bool = False):
        """One store request; store failures become RendezvousConnectionError.

        With timeout_ok, a WAIT's timeout (DistStoreError) is re-raised as is.
        """
        try:
            return getattr(self._store, op)(*args)
        except dist.DistStoreError:
            if timeout_ok:
                raise
            raise RendezvousConnectionError(f"ringstore rendezvous: store {op} timed out")
        except (ValueError, RuntimeError, TimeoutError) as e:
            raise RendezvousConnectionError(
                f"ringstore rendezvous: store {op} failed: {e}") from e

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
        return bool(self._call("check", [self._base + "closed"]))

    def set_closed(self) -> None:
        self._call("set", self._base + "closed", "1")

    def num_nodes_waiting(self) -> int:
        """Arrivals in the round after ours; 0 if our round is full (max nodes)."""
        if self._round is None or self._world >= self._max:
            return 0
        return int(self._call("add", self._k(self._round + 1, "n"), 0))

    def shutdown(self) -> bool:
        self._stop_heartbeats()
        try:
            self.set_closed()
            return True
        except RendezvousError as e:
            log.warning("ringstore rendezvous %s: shutdown failed: %s", self._run_id, e)
            return False

    def next_rendezvous(self) -> RendezvousInfo:
        self._stop_heartbeats()
        deadline = time.monotonic() + self._join_timeout
        r = int(self._call("add", self._base + "round", 0))
        if self._round is not None:
            r = max(r, self._round + 1)
        self._round = None
        while True:
            if self.is_closed():
                raise RendezvousClosedError(f"the rendezvous '{self._run_id}' is closed")
            got = self._join_round(r, deadline)
            if got is not None:
                break
            r += 1  # late for round r, or r was full: wait in the next one
        rank, world = got
        self._round, self._world = r, world
        self._start_heartbeats()
        log.info("ringstore rendezvous %s: round %d, rank %d of %d (arrival %d)",
                 self._run_id, r, rank, world, self._slot)
        # inherited by the workers torchrun starts next (see _worker_hook.py)
        os.environ[WORKER_PREFIX_ENV] = self._k(r, "worker")
        store = dist.PrefixStore(self._k(r, "agent"), self._store)
        return RendezvousInfo(store, rank, world,
                              RendezvousStoreInfo(self._host, self._port))

    # --------------------------------------------------------- the protocol
    def _beat(self, r: int, a: int, left: bool = False) -> None:
        mark = "left" if left else f"{time.time():.3f}"
        self._call("set", self._k(r, "hb", a), f"{mark} {self._desc}")

    def _last_call_of(self, r: int, a: int) -> tuple[float, int]:
        """The round's last-call deadline; the first node to ask sets it."""
        mine = f"{time.time() + self._last_call:.3f} {a}"
        v = self._call("compare_set", self._k(r, "lc"), "", mine).decode()
        when, setter = v.split()
        return float(when), int(setter)

    def _join_round(self, r: int, deadline: float) -> tuple[int, int] | None:
        """Join round r; (rank, world) if this node is a member, else None."""
        a = int(self._call("add", self._k(r, "n"), 1))
        self._slot = a
        if a > self._max:
            return None  # full: the arrival numbered max closes it
        self._beat(r, a)
        done = self._k(r, "done")
        lc = self._last_call_of(r, a) if a >= self._min else None
        retry_at = 0.0  # after a failed close attempt, the time of the next
        if a == self._max and not self._try_close(r, a):
            retry_at = time.time() + self._interval
        while True:
            now = time.time()
            close_at = None
            if lc is not None:
                # the setter of the last call closes at its deadline; the
                # others take over only if it has not closed one dead-time later
                close_at = max(lc[0] + (0 if lc[1] == a else self._dead_after), retry_at)
            chunk = self._interval if close_at is None else min(self._interval, close_at - now)
            chunk = min(chunk, deadline - time.monotonic())
            try:
                if chunk >= 0.001:
                    self._call("wait", [done], timedelta(seconds=chunk), timeout_ok=True)
                    break
                if self._call("check", [done]):
                    break
            except dist.DistStoreError:
                pass  # a WAIT timeout; a lost connection is DistNetworkError
            if self.is_closed():
                self._beat(r, a, left=True)
                raise RendezvousClosedError(f"the rendezvous '{self._run_id}' is closed")
            if time.monotonic() >= deadline:
                self._beat(r, a, left=True)
                raise RendezvousTimeoutError(
                    f"round {r} of the rendezvous '{self._run_id}' did not complete "
                    f"within join_timeout={self._join_timeout:g}s")
            self._beat(r, a)
            if lc is None and int(self._call("add", self._k(r, "n"), 0)) >= self._min:
                lc = self._last_call_of(r, a)
            if close_at is not None and time.time() >= close_at:
                if not self._try_close(r, a):
                    retry_at = time.time() + self._interval
        got = _Result(self._call("get", done)).member(a)
        if got is None:
            log.info("ringstore rendezvous %s: arrival %d is late for round %d",
                     self._run_id, a, r)
        return got

    def _try_close(self, r: int, a: int) -> bool:
        """Close round r if this node wins the lease and enough nodes live."""
        lease = self._k(r, "lease")
        mine = f"{a} {time.time():.3f}"
        held = self._call("compare_set", lease, "", mine).decode()
        if held != mine:
            holder_ts = float(held.split()[1])
            if time.time() - holder_ts < self._dead_after:
                return False  # someone else is closing
            if self._call("compare_set", lease, held, mine).decode() != mine:
                return False
        # ages count from the start of the close, not from after the wait below
        started = time.time()
        k = min(int(self._call("add", self._k(r, "n"), 0)), self._max)
        keys = [self._k(r, "hb", i) for i in range(1, k + 1)]
        dead = set()
        try:
            # an arrival whose node died between its ADD and its first
            # heartbeat never writes the key: wait a dead-time for it
            self._call("wait", keys, timedelta(seconds=self._dead_after), timeout_ok=True)
        except dist.DistStoreError:
            dead = {i for i in range(1, k + 1) if not self._call("check", [keys[i - 1]])}
        present = [i for i in range(1, k + 1) if i not in dead]
        values = self._call("multi_get", [keys[i - 1] for i in present]) if present else []
        for i, v in zip(present, values):
            mark = v.split(b" ", 1)[0]
            if i != a and (mark == b"left" or float(mark) < started - self._dead_after):
                dead.add(i)
        if k - len(dead) < self._min:
            self._call("compare_set", lease, mine, "")
            return False
        result = str(k) + (" " + ",".join(map(str, sorted(dead))) if dead else "")
        self._call("compare_set", self._k(r, "done"), "", result)
        # move the hint forward to r+1 from wherever it is (it lags if a
        # closer died between its done and its hint update), never backward
        seen, want = str(r), str(r + 1)
        while int(seen) <= r:
            seen = self._call("compare_set", self._base + "round", seen, want).decode()
        if dead:
            log.warning("ringstore rendezvous %s: round %d closed without dead arrivals %s",
                        self._run_id, r, sorted(dead))
        return True

    # ----------------------------------------------------------- heartbeats
    def _start_heartbeats(self) -> None:
        r, a = self._round, self._slot

        def beat() -> bool:
            try:
                self._beat(r, a)
                return True
            except RendezvousError as e:
                # the client does not reconnect: later beats would fail too
                log.warning("ringstore rendezvous %s: heartbeat failed, stopping "
                            "heartbeats: %s", self._run_id, e)
                return False

        # A beat is one request, bounded by the client's read timeout.
        self._hb = _Heartbeats(beat, self._interval, self._read_timeout + 1.0,
                               f"ringstore-rdzv-hb-{a}")

    def _stop_heartbeats(self) -> None:
        if self._hb is not None:
            self._hb.stop()
            self._hb = None


def create_handler(params: RendezvousParameters) -> RingstoreRendezvousHandler:
    """The handler creator torchrun's registry calls with the --rdzv-* parameters."""
    return RingstoreRendezvousHandler(params)


def torchrun_handler():
    """Entry point of the ``torchrun.handlers`` group: returns the creator.

    torch's registry calls ``entry_point.load()()`` and registers the result,
    so this returns the same function every time (re-registering an equal
    creator is allowed; a different one is not).
    """
    return create_handler
