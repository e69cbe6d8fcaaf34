# SPDX-License-Identifier: MIT
"""A deterministic simulator for ringstore._protocol: no socket, no sleep.

``FakeStore`` is a TCPStore server's semantics over a dict (including
torch's reply to a COMPARE_SET on a missing key: the expected value), with
a history of every write so that a crash can roll the store back to a
prefix of it. ``Sim`` runs many protocol generators (nodes) against it on a
virtual clock: every request takes a random virtual latency drawn from a
seeded generator, so a seed is one interleaving, replayed exactly. When no
node can run, the clock jumps to the next wake-up. A WAIT (or a GET of a
missing key) parks its node until its keys exist or its timeout passes.

``Sim.crash(at, down, lag)`` models a store restart: each request in flight
is applied or not (seeded), the store rolls back to its state at a random
moment within ``lag`` seconds before the crash (``--fsync everysec``: the
last second or so), and every connection breaks. A node notices at its next
request (or at once, if it was blocked in one); it reconnects once the
store is up again, runs its reconnect hook (a member re-publishes, as the
handler's hook does), and gets Restarted thrown in, like the real driver.
``Sim.crash_to(keep_until, down)`` is the same with the rollback point
chosen by the test. ``Sim.lose_reply(node, pred)`` applies that node's next
request for which pred(op) is true and then throws Restarted(lost) instead
of returning the reply (a lost reply: the connection broke after the
server applied the request).
"""
from __future__ import annotations

import itertools
import random

from ringstore._protocol import (
    Closed, Config, Join, Keys, Op, Restarted, StoreTimeout, TimedOut, WaitTimeout, collect,
)

BLOCK = object()


class FakeStore:
    def __init__(self, sim):
        self.sim = sim
        self.data: dict[str, bytes] = {}
        self.history: list[tuple[float, str, bytes | None]] = []
        self.incarnation = 0
        self.up_at = 0.0
        self.requests = 0

    @staticmethod
    def _b(v) -> bytes:
        return v if isinstance(v, bytes) else str(v).encode()

    def _write(self, k, v):
        self.history.append((self.sim.now, k, v))
        if v is None:
            self.data.pop(k, None)
        else:
            self.data[k] = v

    def rollback(self, keep_until: float) -> None:
        self.history = [h for h in self.history if h[0] <= keep_until]
        self.data = {}
        for _, k, v in self.history:
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v

    def apply(self, kind, args):
        """The reply, or BLOCK (the keys a WAIT/GET/MULTI_GET waits for)."""
        self.requests += 1
        d = self.data
        if kind == "add":
            k, n = args
            v = int(d.get(k, b"0")) + n
            self._write(k, str(v).encode())
            return v
        if kind == "set":
            self._write(args[0], self._b(args[1]))
            return None
        if kind == "compare_set":
            k, exp, des = args[0], self._b(args[1]), self._b(args[2])
            if k not in d:
                if exp == b"":
                    self._write(k, des)
                    return des
                return exp  # torch's reply for a missing key
            if d[k] == exp:
                self._write(k, des)
                return des
            return d[k]
        if kind == "check":
            return all(k in d for k in args[0])
        if kind in ("get", "multi_get", "wait"):
            keys = [args[0]] if kind == "get" else args[0]
            if not all(k in d for k in keys):
                return BLOCK
            if kind == "get":
                return d[args[0]]
            return [d[k] for k in keys] if kind == "multi_get" else None
        if kind == "delete_key":
            had = args[0] in d
            if had:
                self._write(args[0], None)
            return had
        if kind == "list_keys":
            return list(d)
        if kind == "num_keys":
            return len(d)
        raise AssertionError(f"unknown request {kind}")

    def run_keys(self, run: str) -> list[str]:
        return [k for k in self.data if k.startswith(f"rdzv/{run}/")]


class FakeClock:
    def __init__(self, sim):
        self.sim = sim

    def time(self):
        return self.sim.now

    def monotonic(self):
        return self.sim.now

    def sleep(self, s):
        raise AssertionError("protocol code must yield sleep(), not call clock.sleep()")


class Node:
    """One simulated agent: joins, stays a member (heartbeats), and re-joins
    when nodes wait for the next round (as torchrun's monitor loop does),
    after a store restart if ``rejoin_on_restart`` (its workers used the
    store and failed). It leaves (shutdown(): slot left, collection) at
    ``leave_at`` or after ``rounds_wanted`` memberships, and dies silently
    at ``die_at``. Start and end times are relative to the node's creation
    for start, absolute (sim.now) for leave_at and die_at."""

    def __init__(self, sim, name, keys, cfg, start, leave_at=None, rejoin_on_restart=False,
                 rounds_wanted=None, die_at=None):
        self.sim, self.name, self.keys, self.cfg = sim, name, keys, cfg
        self.who = f"sim {name} 0 {name}"
        self.seq = itertools.count(1)
        self.start, self.leave_at, self.die_at = start, leave_at, die_at
        self.rejoin_on_restart = rejoin_on_restart
        self.rounds_wanted = rounds_wanted  # stop after this many memberships
        self.memberships: list[tuple[int, int, int, str]] = []  # (round, rank, world, done)
        self.error: Exception | None = None
        self.joins: list[Join] = []
        self.member = None
        self.finished = False
        # scheduler state
        self.gen = self.life()
        self.ready_at = start
        self.inbox = ("send", None)
        self.phase = "resume"
        self.op = None
        self.block = None  # (keys, deadline, kind)
        self.conn = -1  # incarnation connected to (-1: not yet)
        self.hook = None
        self.lose: list = []  # predicates: lose the reply of the next match
        self.before: list = []  # (predicate, fn): run fn before the next match
        self.delays: list = []  # (predicate, seconds): the next match takes longer

    @property
    def in_join(self) -> bool:
        return self.member is None and not self.finished

    def life(self):
        keys, cfg = self.keys, self.cfg
        prev = None
        while True:
            join = Join(keys, cfg, self.who, self.sim.clock, prev=prev, seq=self.seq)
            self.joins.append(join)
            try:
                r, rank, world, member = yield from join.run()
            except (Closed, TimedOut) as e:
                self.error = e
                return
            self.memberships.append((r, rank, world, join.result.encode()))
            self.member = member
            self.hook = member.restore
            prev = member
            if self.rounds_wanted and len(self.memberships) >= self.rounds_wanted:
                self.leave_at = self.sim.now
            while True:  # member: beat, and watch the next round
                yield Op("sleep", cfg.interval)
                if self.die_at is not None and self.sim.now >= self.die_at:
                    return  # dies: no more beats, no `left` mark
                try:
                    if self.leave_at is not None and self.sim.now >= self.leave_at:
                        yield from member.leave()
                        yield from collect(keys, r, self.who, self.sim.clock, cfg.dead_after,
                                           patient=True)
                        self.hook = None
                        return
                    yield from member.beat()
                    if world < cfg.max_nodes and int((yield Op("add", keys.n(r + 1), 0))) > 0:
                        break  # torchrun restarts the workers: next_rendezvous()
                except Restarted:
                    if self.rejoin_on_restart:
                        break  # the workers' clients died with the store
            self.hook = None
            self.member = None


class Sim:
    def __init__(self, seed: int = 0, latency=(0.0005, 0.02), op_timeout: float = 60.0):
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.latency = latency
        self.op_timeout = op_timeout
        self.clock = FakeClock(self)
        self.store = FakeStore(self)
        self.nodes: list[Node] = []
        self.events: list[tuple[float, int, object]] = []
        self.crashes: list[float] = []
        self._eid = itertools.count()

    # ---------------------------------------------------------- scenario
    def node(self, run, cfg: Config, start=0.0, **kw) -> Node:
        n = Node(self, f"{run}-{len(self.nodes)}", Keys(run), cfg, self.now + start, **kw)
        self.nodes.append(n)
        return n

    def at(self, t, fn):
        """Run fn() at virtual time now + t (between requests)."""
        self.events.append((self.now + t, next(self._eid), fn))

    def crash(self, at: float, down: float = 0.5, lag: float = 1.0):
        self.at(at, lambda: self._crash(down, lag))

    def crash_to(self, keep_until: float, down: float = 0.5, at: float = 0.0):
        """A crash at now + at that rolls back to absolute time keep_until."""
        self.at(at, lambda: self._crash(down, None, keep_until))

    def lose_reply(self, node: Node, pred):
        """pred: an Op kind, or a function of the Op."""
        node.lose.append(pred if callable(pred) else (lambda op, k=pred: op.kind == k))

    def before(self, node: Node, pred, fn) -> None:
        """Run fn() once, just before node's next request matching pred is
        applied (to change the store at an exact point of its protocol)."""
        node.before.append((pred, fn))

    def delay(self, node: Node, pred, seconds: float) -> None:
        """node's next request matching pred takes `seconds` longer."""
        node.delays.append((pred, seconds))

    def put(self, key: str, value) -> None:
        """A write by someone outside the simulation (a test's setup)."""
        self.store._write(key, FakeStore._b(value))

    def get(self, key: str, default=None):
        return self.store.data.get(key, default)

    # ------------------------------------------------------------- run
    def run(self, until: float, stop=None) -> None:
        """Run until virtual time now + until, or until stop() is true, or
        until every node finished."""
        end = self.now + until
        while self.now <= end:
            if stop is not None and stop():
                return
            self.events.sort(key=lambda e: (e[0], e[1]))
            while self.events and self.events[0][0] <= self.now:
                _, _, fn = self.events.pop(0)
                fn()
            live = [n for n in self.nodes if not n.finished]
            if not live:
                return
            ready = [n for n in live if self._ready(n)]
            if ready:
                self._step(self.rng.choice(ready))
                continue
            wake = [self._wake(n) for n in live]
            if self.events:
                wake.append(self.events[0][0])
            nxt = min(wake)
            if nxt > end:
                self.now = end + 1e-9
                return
            self.now = max(self.now, nxt)

    def _ready(self, n: Node) -> bool:
        if n.phase == "blocked":
            keys, deadline, _ = n.block
            return all(k in self.store.data for k in keys) or self.now >= deadline
        return n.ready_at <= self.now

    def _wake(self, n: Node) -> float:
        if n.phase == "blocked":
            return n.block[1]
        return n.ready_at

    def _step(self, n: Node) -> None:
        st = self.store
        if n.phase == "resume":
            how, what = n.inbox
            try:
                op = n.gen.throw(what) if how == "throw" else n.gen.send(what)
            except StopIteration:
                n.finished = True
                return
            except Exception as e:  # a protocol failure: the test reports it
                n.error, n.finished = e, True
                return
            if op.kind == "sim_hook":
                raise AssertionError("unused")
            if op.kind == "sleep":
                n.ready_at = self.now + op.args[0]
                n.inbox = ("send", None)
                return
            n.op = op
            if n.conn == -1:
                n.phase, n.ready_at = "connect", max(self.now, st.up_at)
                return
            if n.conn != st.incarnation:
                n.phase, n.ready_at = "reconnect", max(self.now, st.up_at)
                return
            n.phase, n.ready_at = "apply", self.now + self.rng.uniform(*self.latency)
            for d in n.delays:
                if d[0](op):
                    n.delays.remove(d)
                    n.ready_at += d[1]
                    break
            return
        if n.phase == "connect":  # a node's first connection
            n.conn = st.incarnation
            n.phase, n.ready_at = "apply", self.now + self.rng.uniform(*self.latency)
            return
        if n.phase == "apply":
            for hook in n.before:
                if hook[0](n.op):
                    n.before.remove(hook)
                    hook[1]()
                    break
            reply = st.apply(n.op.kind, n.op.args)
            if reply is BLOCK:
                timeout = n.op.args[1] if n.op.kind == "wait" else self.op_timeout
                n.phase, n.block = "blocked", (
                    [n.op.args[0]] if n.op.kind == "get" else n.op.args[0],
                    self.now + timeout, n.op.kind)
                return
            self._reply(n, reply)
            return
        if n.phase == "blocked":
            keys, deadline, kind = n.block
            n.block = None
            if all(k in st.data for k in keys):
                reply = st.apply(n.op.kind, n.op.args)
                self._reply(n, reply)
            else:
                n.phase, n.ready_at = "resume", self.now
                n.inbox = ("throw", WaitTimeout() if kind == "wait" else StoreTimeout())
            return
        if n.phase == "reconnect":
            n.conn = st.incarnation
            if n.hook is not None:  # the reconnect hook, before anything else
                gen, value = n.hook(), None
                try:
                    while True:
                        op = gen.send(value)
                        value = st.apply(op.kind, op.args)
                        assert value is not BLOCK, op
                except StopIteration:
                    pass
            n.phase, n.ready_at = "resume", self.now
            n.inbox = ("throw", Restarted(n.op))
            return
        raise AssertionError(n.phase)

    def _reply(self, n: Node, reply) -> None:
        n.phase, n.ready_at = "resume", self.now
        for pred in n.lose:
            if pred(n.op):
                n.lose.remove(pred)
                n.phase, n.ready_at = "reconnect", self.now  # applied; the reply is lost
                return
        n.inbox = ("send", reply)

    def _crash(self, down: float, lag, keep_until=None) -> None:
        st = self.store
        for n in self.nodes:
            if n.phase == "apply" and self.rng.random() < 0.5:
                st.apply(n.op.kind, n.op.args)  # applied just before the crash
        st.rollback(keep_until if keep_until is not None else self.now - self.rng.uniform(0, lag))
        self.crashes.append(self.now)
        st.incarnation += 1
        st.up_at = self.now + down
        for n in self.nodes:
            if n.finished:
                continue
            if n.phase in ("apply", "blocked"):
                n.phase, n.block, n.ready_at = "reconnect", None, st.up_at

    # ----------------------------------------------------------- checks
    def check_rounds(self, quiescent: bool = True) -> dict[int, list]:
        """Every member of a round saw the same result; ranks are distinct;
        at quiescence every live member of each result finished its join."""
        by_round: dict[tuple[str, int], list] = {}
        for n in self.nodes:
            for r, rank, world, done in n.memberships:
                by_round.setdefault((n.keys.base, r), []).append((rank, world, done, n.name))
        for (base, r), ms in by_round.items():
            dones = {m[2] for m in ms}
            assert len(dones) == 1, f"round {base}{r}: members saw different results {ms}"
            ranks = [m[0] for m in ms]
            assert len(ranks) == len(set(ranks)), f"round {base}{r}: duplicate ranks {ms}"
            world = ms[0][1]
            assert all(0 <= rank < world for rank in ranks), ms
            if quiescent:
                assert len(ms) == world, \
                    f"round {base}{r}: {len(ms)} members of world {world}: {ms}"
        return by_round
