# SPDX-License-Identifier: MIT
"""The ringstore rendezvous protocol, sans-I/O: its keys, its value formats
and the state machine of one ``next_rendezvous()`` call, in one table.

Nothing here opens a socket, sleeps or reads a clock it was not given, and
nothing imports torch. A step of the machine is a generator that yields
:class:`Op` requests (the names and arguments of torch's TCPStore client
methods, plus ``sleep``) and is sent their results; a driver executes them.
rendezvous.py drives the machine over a real TCPStore client;
tests/rdzv/sim.py drives many of them over an in-memory store with a fake
clock, so the protocol's tests need no socket and no sleep (h11's _state.py
is the model: one table, and code that cannot take a transition the table
does not list).

The driver throws three things into a step: :class:`WaitTimeout` (a WAIT ran
out), :class:`StoreTimeout` (any other request did), and :class:`Restarted`
(the connection was lost and has been re-established; the store may have
restarted and may have lost its last writes). A step never catches
Restarted: :meth:`Join.run` turns it into the ``restarted`` event, which
leads every non-final state to REVALIDATE.

Every value is written and parsed in this module, by the class that names
it (:class:`Beat`, :class:`LastCall`, :class:`Lease`, :class:`Result`, and
the integers ``round`` and ``gc``).

Model of a store restart (docs/rendezvous.md "Store restarts" has the prose):

* every client's connection breaks, so every client that uses the store
  again notices (its next request fails and it reconnects);
* the store comes back with a prefix of its history that holds every write
  older than ``commit_wait`` seconds (``--fsync always``: every
  acknowledged write; ``everysec``: all but about the last second).

Safety then rests on four rules, each argued at the code that applies it:

1. Non-idempotent writes are never re-sent (etcd clientv3's at-most-once
   rule). A lost ADD reply abandons that arrival; a lost COMPARE_SET reply
   is resolved by the next COMPARE_SET, whose reply is the current value.
2. A slot is owned through its heartbeat key, claimed with COMPARE_SET from
   empty, and every later write of it is a COMPARE_SET from the owner's
   last value. A counter that went backwards hands an arrival number out
   twice, but only one node can own the slot (:meth:`Join.s_claim`).
3. A node acts on a round's result only once the result is durable: it
   read ``done``, waited ``commit_wait`` seconds, and then read it again on
   the same connection (:meth:`Join.s_commit`). A result that a restart
   can still lose has not been acted on by anyone, so a different result
   written after the restart hurts no one.
4. After a restart, everything known only from before it is re-read
   (REVALIDATE); a member re-publishes what it acted on (:class:`Member`).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "Clock", "Config", "Join", "Keys", "Member", "Op", "TABLE", "FINAL",
    "Beat", "LastCall", "Lease", "Result", "Restarted", "WaitTimeout",
    "StoreTimeout", "Closed", "TimedOut", "ProtocolError", "collect", "chart",
]


# ------------------------------------------------------------------ I/O
class Op(tuple):
    """One request: ``(kind, args)``. ``kind`` is a TCPStore client method
    (add, set, get, check, compare_set, multi_get, wait, delete_key,
    list_keys) or ``sleep``."""

    __slots__ = ()

    def __new__(cls, kind: str, *args):
        return super().__new__(cls, (kind, args))

    @property
    def kind(self) -> str:
        return self[0]

    @property
    def args(self) -> tuple:
        return self[1]

    def __repr__(self):
        return f"Op({self.kind}{self.args!r})"


def add(k, n):
    return Op("add", k, n)


def cas(k, expected, desired):
    return Op("compare_set", k, expected, desired)


def check(keys):
    return Op("check", list(keys))


def get(k):
    return Op("get", k)


def multi_get(keys):
    return Op("multi_get", list(keys))


def wait(keys, seconds):
    return Op("wait", list(keys), seconds)


def delete(k):
    return Op("delete_key", k)


def list_keys():
    return Op("list_keys")


def sleep(seconds):
    return Op("sleep", seconds)


class Restarted(Exception):
    """The connection broke and is back. ``lost`` is the write whose reply
    was lost (it may or may not have been applied), or None."""

    def __init__(self, lost: Op | None = None):
        super().__init__(f"store connection re-established (lost reply: {lost!r})")
        self.lost = lost


class WaitTimeout(Exception):
    """A WAIT's timeout elapsed before its keys existed."""


class StoreTimeout(Exception):
    """A request other than WAIT timed out."""


class Closed(Exception):
    """The rendezvous is closed."""


class TimedOut(Exception):
    """``join_timeout`` elapsed."""


class ProtocolError(Exception):
    """A corrupt value, or a transition the table does not list."""


class Clock:
    """Wall time (heartbeat ages, deadlines other hosts read), monotonic
    time (this node's own deadlines) and sleep. Tests replace it."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Config:
    min_nodes: int
    max_nodes: int
    join_timeout: float = 600.0
    last_call: float = 30.0
    interval: float = 5.0  # keep_alive_interval
    dead_after: float = 15.0  # keep_alive_interval x keep_alive_max_attempt
    commit_wait: float = 2.0


# ----------------------------------------------------------------- keys
class Keys:
    """Every key of one run (TCPStore user keys; the client adds its "/")."""

    def __init__(self, run_id: str):
        self.base = f"rdzv/{run_id}/"
        self.closed = self.base + "closed"  # exists once the rendezvous is closed
        self.round = self.base + "round"  # hint: the round a joiner tries first
        self.gc = self.base + "gc"  # rounds below this one are collected
        self.gc_lease = self.base + "gclease"  # one collector at a time

    def n(self, r):  # arrival counter: ADD 1 returns the arrival number a
        return f"{self.base}{r}/n"

    def hb(self, r, a):  # slot a: its owner's Beat
        return f"{self.base}{r}/hb/{a}"

    def lc(self, r):  # LastCall
        return f"{self.base}{r}/lc"

    def lease(self, r):  # closer Lease
        return f"{self.base}{r}/lease"

    def done(self, r):  # Result
        return f"{self.base}{r}/done"

    def agent(self, r):  # RendezvousInfo.store (PrefixStore-style "<p>/<key>")
        return f"{self.base}{r}/agent"

    def worker(self, r):  # the workers' env:// store prefix (_worker_hook)
        return f"{self.base}{r}/worker"

    # what follows "<base><r>/" in a key of round r (another run whose id
    # extends this one's, "<run>/1", must not look like round 1)
    _ROUND_PARTS = ("n", "hb", "lc", "lease", "done", "agent", "worker")

    def round_of(self, key: str) -> int | None:
        """The round of a key under ``<base><r>/``, else None."""
        if not key.startswith(self.base):
            return None
        parts = key[len(self.base):].split("/", 2)
        if len(parts) < 2 or not parts[0].isdigit() or parts[1] not in self._ROUND_PARTS:
            return None
        return int(parts[0])

    def is_hb(self, key: str) -> bool:
        r = self.round_of(key)
        return r is not None and key.startswith(f"{self.base}{r}/hb/")


# --------------------------------------------------------------- values
def _text(raw) -> str:
    return raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)


@contextmanager
def _parsing(what: str, raw):
    """A value that does not parse is a ProtocolError naming it."""
    try:
        yield
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"corrupt {what} {raw[:80]!r}") from e


@dataclass(frozen=True)
class Beat:
    """A slot's value: ``<status> <epoch> <seq> <who>``, status ``up`` or
    ``left``. ``who`` (host, pid, handler id, nonce) names the owner; ``seq``
    grows with every write, so a new value never equals the last one (a
    COMPARE_SET from ``x`` to ``x`` would be indistinguishable from torch's
    reply for a missing key)."""

    status: str
    ts: float
    seq: int
    who: str

    def encode(self) -> str:
        return f"{self.status} {self.ts:.3f} {self.seq} {self.who}"

    @classmethod
    def parse(cls, raw) -> Beat:
        with _parsing("heartbeat", raw):
            status, ts, seq, who = _text(raw).split(" ", 3)
            if status not in ("up", "left"):
                raise ValueError(status)
            return cls(status, float(ts), int(seq), who)

    def alive(self, since: float) -> bool:
        return self.status == "up" and self.ts >= since


@dataclass(frozen=True)
class LastCall:
    """``<deadline epoch> <a of the setter>``."""

    deadline: float
    setter: int

    def encode(self) -> str:
        return f"{self.deadline:.3f} {self.setter}"

    @classmethod
    def parse(cls, raw) -> LastCall:
        with _parsing("last call", raw):
            when, setter = _text(raw).split()
            return cls(float(when), int(setter))


@dataclass(frozen=True)
class Lease:
    """``<epoch> <holder>``; the empty value means free."""

    ts: float
    holder: str

    def encode(self) -> str:
        return f"{self.ts:.3f} {self.holder}"

    @classmethod
    def parse(cls, raw) -> Lease | None:
        with _parsing("lease", raw):
            text = _text(raw)
            if not text:
                return None
            ts, holder = text.split(" ", 1)
            return cls(float(ts), holder)


@dataclass(frozen=True)
class Result:
    """``K`` or ``K d1,d2,...``: arrivals 1..K minus the dead d_i are the
    members, ranked by arrival."""

    k: int
    dead: tuple[int, ...] = ()

    def encode(self) -> str:
        return str(self.k) + (" " + ",".join(map(str, sorted(self.dead))) if self.dead else "")

    @classmethod
    def parse(cls, raw) -> Result:
        with _parsing("round result", raw):
            head, _, tail = _text(raw).partition(" ")
            return cls(int(head), tuple(sorted(int(x) for x in tail.split(","))) if tail else ())

    @property
    def world(self) -> int:
        return self.k - len(self.dead)

    def member(self, a: int) -> tuple[int, int] | None:
        """(rank, world size) of arrival a, or None if a is not a member."""
        if a > self.k or a in self.dead:
            return None
        return a - 1 - sum(1 for d in self.dead if d < a), self.world


# ------------------------------------------------------ the state table
# (state, event) -> next state. Join.run() looks every transition up here
# and raises ProtocolError for one that is missing, so this table is the
# whole machine; chart() renders it for docs/rendezvous.md.
FINAL = ("MEMBER", "CLOSED", "TIMED_OUT")

STATES = {
    # state: (requests it sends, in order)
    "START": "CHECK closed; mark my slot of the last round `left`; ADD round "
             "0; ADD gc 0. r = max(round, gc, last round + 1)",
    "ARRIVE": "a = ADD <r>/n 1 (a reply lost: REVALIDATE abandons the arrival)",
    "CLAIM": "COMPARE_SET <r>/hb/a \"\" -> `up` beat (a taken slot: only after a "
             "counter went backwards)",
    "WAIT": "learn the last call once a >= MIN (or ADD <r>/n 0 >= MIN): "
            "COMPARE_SET <r>/lc \"\" -> (now+last_call, a); at my close turn go "
            "to CLOSE; else WAIT <r>/done for min(interval, time to my turn), "
            "then CHECK closed, beat (COMPARE_SET from my last value)",
    "CLOSE": "ADD gc 0; take <r>/lease (COMPARE_SET, or steal a lease older "
             "than the dead time); K = min(ADD <r>/n 0, MAX); WAIT hb/1..K for "
             "the dead time (CHECK each on timeout); MULTI_GET them; dead = "
             "`left`, stale or missing; too few: release the lease, or, if the "
             "round is full, void it (every arrival dead); COMPARE_SET "
             "<r>/done \"\" -> Result; move round to r+1",
    "RESULT": "ADD gc 0; GET <r>/done; member if a <= K and a not dead",
    "COMMIT": "the closer collects old rounds (collect()); sleep until "
              "commit_wait after done was read; CHECK <r>/done on the same "
              "connection",
    "NEXT": "r = max(r+1, gc); CHECK closed",
    "REVALIDATE": "after a reconnect: re-own my slot (COMPARE_SET from my last "
                  "value, or from \"\" if it vanished); CHECK <r>/done",
    "MEMBER": "return rank and world; heartbeats go on (Member.beat)",
    "CLOSED": "mark my slot `left`; raise RendezvousClosedError",
    "TIMED_OUT": "mark my slot `left`; raise RendezvousTimeoutError",
}

TABLE = {
    ("START", "closed"): "CLOSED",
    ("START", "open"): "ARRIVE",
    ("ARRIVE", "arrived"): "CLAIM",
    ("ARRIVE", "full"): "NEXT",  # a > MAX
    ("CLAIM", "claimed"): "WAIT",
    ("CLAIM", "taken"): "ARRIVE",
    ("WAIT", "done"): "RESULT",
    ("WAIT", "turn"): "CLOSE",
    ("WAIT", "tick"): "WAIT",
    ("WAIT", "taken"): "ARRIVE",
    ("WAIT", "closed"): "CLOSED",
    ("WAIT", "deadline"): "TIMED_OUT",
    ("CLOSE", "closed_round"): "RESULT",
    ("CLOSE", "not_now"): "WAIT",  # lease held elsewhere, or too few live
    ("CLOSE", "collected"): "NEXT",  # r is below gc
    ("RESULT", "member"): "COMMIT",
    ("RESULT", "late"): "NEXT",  # a > K, a dead, or r below gc
    ("COMMIT", "committed"): "MEMBER",
    ("COMMIT", "vanished"): "REVALIDATE",
    ("NEXT", "open"): "ARRIVE",
    ("NEXT", "closed"): "CLOSED",
    ("REVALIDATE", "start"): "START",  # no round chosen yet
    ("REVALIDATE", "no_slot"): "ARRIVE",  # the arrival's reply was lost
    ("REVALIDATE", "lost"): "ARRIVE",  # my slot is owned by another node
    ("REVALIDATE", "done"): "RESULT",
    ("REVALIDATE", "waiting"): "WAIT",
    ("REVALIDATE", "deadline"): "TIMED_OUT",
}
for _s in STATES:
    if _s not in FINAL:
        TABLE[(_s, "restarted")] = "REVALIDATE"
del _s


def chart() -> str:
    """The table as Markdown (docs/rendezvous.md embeds it; a test compares)."""
    rows = ["| state | requests | event → next state |", "|---|---|---|"]
    for s, doc in STATES.items():
        edges = [f"{e} → {t}" for (f, e), t in TABLE.items() if f == s and e != "restarted"]
        if (s, "restarted") in TABLE:
            edges.append("restarted → REVALIDATE")
        rows.append(f"| {s} | {doc} | {'<br>'.join(edges) or '(final)'} |")
    return "\n".join(rows) + "\n"


# -------------------------------------------------------------- machine
class Join:
    """One ``next_rendezvous()`` call. ``run()`` is the generator a driver
    executes; its return value is ``(round, rank, world, Member)``.

    ``prev`` is the Member this node was in its last round, if any (its slot
    is marked left at START, and the new round is after it).
    """

    def __init__(self, keys: Keys, cfg: Config, who: str, clock: Clock,
                 prev: Member | None = None, seq=None):
        self.keys, self.cfg, self.who, self.clock, self.prev = keys, cfg, who, clock, prev
        self.state = "START"
        self.deadline = clock.monotonic() + cfg.join_timeout
        self.seq = seq if seq is not None else _counter()
        self.r: int | None = None
        self.floor = 0
        self._drop_slot()
        self.closer = False  # this node wrote the round's result
        self.dead_at_close: list[int] = []
        self.seen_at = 0.0  # when done was read (monotonic)
        self.result: Result | None = None
        self.trace: list[tuple[str, str]] = []  # (state, event), for tests

    def _drop_slot(self):
        self.a: int | None = None
        self.last = ""  # the value of my slot as I last wrote or read it
        self.lc: LastCall | None = None
        self.retry_at = 0.0
        self.tried_full = False

    # the driver loop over the table
    def run(self):
        while self.state not in FINAL:
            step = getattr(self, "s_" + self.state.lower())
            try:
                event = yield from step()
            except Restarted:
                event = "restarted"
            self.trace.append((self.state, event))
            nxt = TABLE.get((self.state, event))
            if nxt is None:
                raise ProtocolError(f"no transition from {self.state} on {event!r}")
            self.state = nxt
        if self.state == "MEMBER":
            rank, world = self.result.member(self.a)
            return self.r, rank, world, Member(self.keys, self.r, self.a, self.last,
                                               self.who, self.result, self.clock, self.seq)
        yield from self._leave()
        raise Closed() if self.state == "CLOSED" else TimedOut()

    # ------------------------------------------------------------- steps
    def s_start(self):
        # first a request that is safe to repeat: the connection may have
        # died while the node trained (Restarted, and REVALIDATE sends it back)
        if (yield check([self.keys.closed])):
            return "closed"
        if self.prev is not None:
            # the previous round's keys are collected once its members left
            yield from self.prev.leave()
            self.prev = _Gone(self.prev.r)
        hint = int((yield add(self.keys.round, 0)))
        self.floor = int((yield add(self.keys.gc, 0)))
        start = self.prev.r + 1 if self.prev is not None else 0
        self.r = max(hint, self.floor, start)
        return "open"

    def s_arrive(self):
        self._drop_slot()
        # Not re-sendable: a lost reply leaves a slot that nobody will
        # claim. It counts as a node that died between its ADD and its
        # first heartbeat: dead at the close, after one dead time.
        a = int((yield add(self.keys.n(self.r), 1)))
        if a > self.cfg.max_nodes:
            return "full"
        self.a = a
        return "arrived"

    def s_claim(self):
        # The slot is mine only if my COMPARE_SET from empty wins. ADD hands
        # out each number once, unless a restart rolled the counter back;
        # then two nodes can get the same a, and exactly one wins here.
        self.last = self._beat("up").encode()
        got = _text((yield cas(self.keys.hb(self.r, self.a), "", self.last)))
        if got == self.last:
            return "claimed"
        self._drop_slot()
        return "taken"

    def s_wait(self):
        cfg, r, a = self.cfg, self.r, self.a
        now = self.clock.time()
        if self.lc is None and (a >= cfg.min_nodes
                                or int((yield add(self.keys.n(r), 0))) >= cfg.min_nodes):
            mine = LastCall(now + cfg.last_call, a).encode()
            self.lc = LastCall.parse((yield cas(self.keys.lc(r), "", mine)))
        close_at = self._close_at(now)
        if close_at is not None and now >= close_at:
            return "turn"
        chunk = cfg.interval if close_at is None else min(cfg.interval, close_at - now)
        chunk = min(chunk, self.deadline - self.clock.monotonic())
        try:
            if chunk >= 0.001:
                yield wait([self.keys.done(r)], chunk)
                return "done"
            if (yield check([self.keys.done(r)])):
                return "done"
        except WaitTimeout:
            pass
        if (yield check([self.keys.closed])):
            return "closed"
        if self.clock.monotonic() >= self.deadline:
            return "deadline"
        if not (yield from self._swap(self._beat("up"))):
            self._drop_slot()
            return "taken"
        return "tick"

    def _close_at(self, now: float) -> float | None:
        """My close turn: at once for the MAX-th arrival (first try), the
        last-call setter at its deadline, any other member one dead time
        later (a dead closer is replaced); never before a failed try's retry."""
        if self.a == self.cfg.max_nodes and not self.tried_full:
            return now
        if self.lc is None:
            return None
        own = self.lc.setter == self.a
        return max(self.lc.deadline + (0 if own else self.cfg.dead_after), self.retry_at)

    def s_close(self):
        cfg, k_, r, a = self.cfg, self.keys, self.r, self.a
        self.tried_full = True
        self.floor = max(self.floor, int((yield add(k_.gc, 0))))
        if r < self.floor:
            return "collected"
        lease = yield from _take_lease(k_.lease(r), self.who, self.clock, cfg.dead_after)
        if lease is None:
            self.retry_at = self.clock.time() + cfg.interval
            return "not_now"
        # ages count from the start of the close, not from after the wait
        started = self.clock.time()
        k = min(int((yield add(k_.n(r), 0))), cfg.max_nodes)
        keys = [k_.hb(r, i) for i in range(1, k + 1)]
        dead = set()
        try:
            # an arrival whose node died between its ADD and its claim never
            # writes its key: wait one dead time for it
            yield wait(keys, cfg.dead_after)
        except WaitTimeout:
            for i in range(1, k + 1):
                if not (yield check([keys[i - 1]])):
                    dead.add(i)
        present = [i for i in range(1, k + 1) if i not in dead]
        values = (yield multi_get([keys[i - 1] for i in present])) if present else []
        for i, v in zip(present, values):
            if i == a:
                continue
            try:
                if not Beat.parse(v).alive(started - cfg.dead_after):
                    dead.add(i)
            except ProtocolError:
                dead.add(i)
        if k - len(dead) < cfg.min_nodes:
            if k < cfg.max_nodes:  # more may arrive: keep the round open
                yield from _release_lease(k_.lease(r), lease)
                self.retry_at = self.clock.time() + cfg.interval
                return "not_now"
            # Full, so nobody else can arrive, and too few alive: it would
            # wait for nobody. A void result (every arrival dead) sends its
            # live nodes on to r+1 together, through the same one-writer
            # COMPARE_SET as any result.
            dead = set(range(1, k + 1))
        # done is only ever written by COMPARE_SET from empty: the first
        # closer's value stays, and every later one reads that value back.
        mine = Result(k, tuple(sorted(dead))).encode()
        got = _text((yield cas(k_.done(r), "", mine)))
        self.closer = got == mine
        # the hint moves forward to r+1 from wherever it is (it lags if a
        # closer died between done and here; a restart can roll it back)
        yield from advance(k_.round, r + 1)
        if self.closer:
            self.dead_at_close = sorted(dead)
        return "closed_round"

    def s_result(self):
        self.floor = max(self.floor, int((yield add(self.keys.gc, 0))))
        if self.r < self.floor:
            return "late"
        raw = yield get(self.keys.done(self.r))
        self.seen_at = self.clock.monotonic()
        self.result = Result.parse(raw)
        return "member" if self.result.member(self.a) is not None else "late"

    def s_commit(self):
        # Rule 3. done was written before seen_at; the store makes a write
        # durable within commit_wait. If the connection is the same one at
        # seen_at + commit_wait (the CHECK below is sent on it, and the
        # driver throws Restarted if any reconnect happened since), the store
        # did not restart in between, so done is durable now and no later
        # restart can lose it. If it did restart, REVALIDATE reads done
        # again, and nobody acted on the lost value.
        if self.closer:
            self.closer = False
            try:
                yield from collect(self.keys, self.r - 2, self.who, self.clock,
                                   self.cfg.dead_after)
            except (StoreTimeout, ProtocolError):
                pass  # best effort: the next round's closer tries again
        left = self.seen_at + self.cfg.commit_wait - self.clock.monotonic()
        if left > 0:
            yield sleep(left)
        if not (yield check([self.keys.done(self.r)])):
            return "vanished"
        return "committed"

    def s_next(self):
        self.r = max(self.r + 1, self.floor)
        self._drop_slot()
        if (yield check([self.keys.closed])):
            return "closed"
        return "open"

    def s_revalidate(self):
        if self.clock.monotonic() >= self.deadline:
            return "deadline"
        if self.r is None:
            return "start"
        if self.a is None:
            return "no_slot"
        self.lc = None  # re-learned from the store in WAIT
        # Re-own the slot. If the counter went back below my number, it
        # hands the number out again, but the new arrival's claim fails on
        # my slot (rule 2), so keeping it is safe.
        if not (yield from self._swap(self._beat("up"))):
            self._drop_slot()
            return "lost"
        if (yield check([self.keys.done(self.r)])):
            return "done"
        return "waiting"

    # ------------------------------------------------------------ helpers
    def _beat(self, status: str) -> Beat:
        return Beat(status, self.clock.time(), next(self.seq), self.who)

    def _swap(self, new: Beat):
        """Write my slot; False if another node owns it."""
        ok, self.last = yield from _swap(self.keys.hb(self.r, self.a), self.last, new, self.who)
        return ok

    def _leave(self):
        if self.a is None:
            return
        try:
            yield from self._swap(self._beat("left"))
        except Restarted:
            pass  # then the slot goes stale: dead one dead time from now


class _Gone:
    """A left Member: only its round is still needed (START's last round)."""

    def __init__(self, r):
        self.r = r

    def leave(self):
        return
        yield


def _counter():
    import itertools
    return itertools.count(1)


def _swap(key: str, last: str, new: Beat, who: str):
    """COMPARE_SET a slot from ``last`` to ``new``, resolving by reading.

    Returns (owned, value now). torch answers a COMPARE_SET on a missing key
    with the expected value, so a reply equal to ``last`` (never equal to
    ``new``: seq grows) means the key vanished (a restart lost it): re-claim
    it from empty. A reply that is an older value of mine (a restart rolled
    it back) is retried from. Another owner's value, or my own ``left``,
    means the slot is not mine. A lost reply is never re-sent: the next
    call's COMPARE_SET reads the value it left.
    """
    want = new.encode()
    for _ in range(4):
        got = _text((yield cas(key, last, want)))
        if got == want:
            return True, want
        if got == last:
            got = _text((yield cas(key, "", want)))
            if got == want:
                return True, want
        try:
            b = Beat.parse(got)
        except ProtocolError:
            return False, last
        if b.who != who or b.status == "left":
            return False, last
        last = got
    return False, last


def advance(key: str, to: int):
    """Move the integer at key forward to ``to`` (never backward)."""
    seen = int((yield add(key, 0)))
    while seen < to:
        got = _text((yield cas(key, str(seen), str(to))))
        if got == str(seen):  # the key vanished between the two requests
            seen = int((yield add(key, 0)))
        else:
            seen = int(got)


def _take_lease(key: str, who: str, clock: Clock, dead_after: float):
    """The lease's value if I now hold it, else None. A free lease is taken
    from empty; a held one is taken over if it is mine (a retry after a lost
    reply) or older than the dead time (its holder died)."""
    mine = Lease(clock.time(), who).encode()
    held = _text((yield cas(key, "", mine)))
    if held == mine:
        return mine
    lease = Lease.parse(held)
    if lease is None:  # "" means free: released since, retry from empty
        return mine if _text((yield cas(key, "", mine))) == mine else None
    if lease.holder != who and clock.time() - lease.ts < dead_after:
        return None  # someone else holds it and is alive
    return mine if _text((yield cas(key, held, mine))) == mine else None


def _release_lease(key: str, mine: str):
    # from my exact value only: a lease taken over since stays its holder's
    yield cas(key, mine, "")


# --------------------------------------------------------------- member
class Member:
    """What a member of round r knows and keeps writing after MEMBER.

    ``beat()`` is one heartbeat; ``restore()`` runs on every reconnect,
    before any other request, and re-publishes what this member acted on:
    its slot, the round's result and the round hint. After rule 3 they are
    durable, so with a write log this only matters if a store lost durable
    state (no --data-dir: a restart loses everything); then it lets the
    members' next round form at r+1 instead of at 0.
    """

    def __init__(self, keys, r, a, last, who, result, clock, seq):
        self.keys, self.r, self.a, self.last, self.who = keys, r, a, last, who
        self.result, self.clock, self.seq = result, clock, seq
        self.lost = False  # my slot is owned by another node (store lost it)

    @property
    def rank(self) -> int:
        return self.result.member(self.a)[0]

    def _new(self, status) -> Beat:
        return Beat(status, self.clock.time(), next(self.seq), self.who)

    def beat(self):
        if self.lost:
            return False
        ok, self.last = yield from _swap(self.keys.hb(self.r, self.a), self.last,
                                         self._new("up"), self.who)
        self.lost = not ok
        return ok

    def restore(self):
        ok = yield from self.beat()
        mine = self.result.encode()
        got = _text((yield cas(self.keys.done(self.r), "", mine)))
        yield from advance(self.keys.round, self.r + 1)
        return ok and got == mine

    def leave(self):
        """Mark the slot left (next_rendezvous, shutdown): the round's keys
        can be collected once every slot is left or stale."""
        if not self.lost:
            try:
                ok, self.last = yield from _swap(self.keys.hb(self.r, self.a), self.last,
                                                 self._new("left"), self.who)
            except Restarted:
                return
            self.lost = True  # no more beats


# ----------------------------------------------------------- collection
def collect(keys: Keys, upto: int, who: str, clock: Clock, dead_after: float,
            patient: bool = False):
    """Delete the keys of rounds nobody can read any more.

    Rounds below ``gc`` are garbage. From ``gc`` upward, a round q <= upto
    is garbage once every slot of it is ``left``, stale (older than the dead
    time) or absent: its members have all moved on (START marks the last
    round's slot left, shutdown() marks it too) or died, and their workers
    were stopped before that (torchrun stops the workers before it calls
    next_rendezvous()). Its agent and worker keys go with it. The closer of
    round r calls this with upto = r-2, shutdown() with its own round: the
    last node out collects its round too.

    Why nobody reads a collected round: a node that is not a member of q
    enters a round >= max(round, gc, its last round + 1). round was moved
    past r before this runs, and gc past q before any key of q is deleted,
    so a store that rolls back a prefix keeps gc if it keeps a deletion. A
    node that chose q before gc moved (a slow one) finds q < gc at CLOSE
    or RESULT and moves on, so it never becomes a member of a collected
    round.

    One collector at a time (a lease like the closer's): the MULTI_GET below
    reads keys of the list_keys snapshot, which only a collector deletes. A
    closer skips collection when another node holds the lease; shutdown()
    is ``patient`` and waits for it (up to a dead time): the nodes of a job
    shut down together, and the last one out must not skip because the
    one before it was still collecting.
    Cost: one LIST_KEYS (every key of the store), one MULTI_GET per round
    examined, and one DELETE_KEY per collected key.
    """
    give_up = clock.monotonic() + (dead_after if patient else 0.0)
    pause = 0.01
    while True:
        lease = yield from _take_lease(keys.gc_lease, who, clock, dead_after)
        if lease is not None:
            break
        if clock.monotonic() >= give_up:
            return 0
        yield sleep(pause)
        pause = min(pause * 2, 0.5)
    floor = int((yield add(keys.gc, 0)))
    by_round: dict[int, list[str]] = {}
    for name in (yield list_keys()):
        q = keys.round_of(name)
        if q is not None:
            by_round.setdefault(q, []).append(name)
    q = floor
    since = clock.time() - dead_after
    while q <= upto:
        hbs = sorted(k for k in by_round.get(q, ()) if keys.is_hb(k))
        values = (yield multi_get(hbs)) if hbs else []
        if any(_alive(v, since) for v in values):
            break
        q += 1
    if q > floor:
        yield from advance(keys.gc, q)  # before any deletion (see above)
    removed = 0
    for p in sorted(by_round):
        if p < q:
            for name in by_round[p]:
                yield delete(name)
                removed += 1
    yield from _release_lease(keys.gc_lease, lease)
    return removed


def _alive(raw, since: float) -> bool:
    try:
        return Beat.parse(raw).alive(since)
    except ProtocolError:
        return False


def run_ops(gen, execute):
    """Run a generator to completion with ``execute(op) -> result`` (which
    may raise; the exception propagates). For hooks and simple drivers."""
    value = None
    while True:
        try:
            op = gen.send(value)
        except StopIteration as e:
            return e.value
        value = execute(op)


if __name__ == "__main__":
    print(chart(), end="")
