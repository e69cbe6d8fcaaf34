# SPDX-License-Identifier: MIT
"""The rendezvous state machine, many handler threads against a real server.

Each handler is a RingstoreRendezvousHandler with its own TCPStore connection,
as on separate nodes. Outcomes are chosen so they do not depend on timing: a
round closes either when its max-th node arrives (last_call_timeout is then
long) or, when the last call is short, only the nodes the test started exist.
Runs against ringstore and PyTorch's own server (conftest ``server``).
"""
from __future__ import annotations

import threading
import time

import pytest
from torch.distributed.elastic.rendezvous import (
    RendezvousClosedError,
    RendezvousParameters,
    RendezvousTimeoutError,
)

from ringstore.rendezvous import RingstoreRendezvousHandler


_handlers: list[RingstoreRendezvousHandler] = []


@pytest.fixture(autouse=True)
def _stop_heartbeats():
    yield
    for h in _handlers:
        h._stop_heartbeats()  # before the server goes away
    _handlers.clear()


def handler(server, run_id, nmin, nmax, **conf):
    conf = {"last_call_timeout": 60, "join_timeout": 60, "read_timeout": 30, **conf}
    params = RendezvousParameters("ringstore", server.endpoint, run_id, nmin, nmax,
                                  local_addr="127.0.0.1", **{k: str(v) for k, v in conf.items()})
    h = RingstoreRendezvousHandler(params)
    _handlers.append(h)
    return h


class Calls:
    """next_rendezvous() of many handlers, each in its own thread."""

    def __init__(self, handlers):
        self.handlers = handlers
        self.results = [None] * len(handlers)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(len(handlers))]
        for t in self.threads:
            t.start()

    def _run(self, i):
        try:
            info = self.handlers[i].next_rendezvous()
            self.results[i] = (self.handlers[i]._round, info.rank, info.world_size, info)
        except Exception as e:  # reported by join()
            self.results[i] = e

    def join(self, timeout=60):
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "handlers still waiting"
        return self.results


def wait_until(pred, timeout=30.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.timeout_s(90)
def test_exact_ranks_and_world(server):
    n = 48
    res = Calls([handler(server, "exact", n, n) for _ in range(n)]).join()
    assert all(isinstance(r, tuple) for r in res), res
    assert sorted(r[1] for r in res) == list(range(n))
    assert {(r[0], r[2]) for r in res} == {(0, n)}
    # bootstrap: the workers' store is this same server
    info = res[0][3]
    assert (info.bootstrap_store_info.master_addr, info.bootstrap_store_info.master_port) == \
        (server.host, server.port)


@pytest.mark.timeout_s(90)
def test_overflow_forms_consecutive_rounds_no_node_twice(server):
    """48 concurrent nodes, max 16, long last call: arrivals beyond max move
    on, so rounds 0, 1, 2 each close full; every node is in exactly one round
    and each round's ranks are exactly 0..15."""
    n, nmax = 48, 16
    res = Calls([handler(server, "waves", 4, nmax) for _ in range(n)]).join()
    assert all(isinstance(r, tuple) for r in res), [r for r in res if not isinstance(r, tuple)]
    by_round = {}
    for rnd, rank, world, _ in res:
        assert world == nmax
        by_round.setdefault(rnd, []).append(rank)
    assert sorted(by_round) == [0, 1, 2]
    for rnd, ranks in by_round.items():
        assert sorted(ranks) == list(range(nmax)), (rnd, sorted(ranks))
    st = server.client()
    assert [st.get(f"rdzv/waves/{r}/done") for r in range(3)] == [b"16"] * 3
    assert st.add("rdzv/waves/3/n", 0) == 0  # nobody went past round 2


@pytest.mark.timeout_s(90)
def test_last_call_closes_with_min_to_max_nodes(server):
    hs = [handler(server, "lastcall", 3, 10, last_call_timeout=0.5) for _ in range(5)]
    res = Calls(hs).join()
    assert sorted(r[1] for r in res) == list(range(5)) and {r[2] for r in res} == {5}


@pytest.mark.timeout_s(90)
def test_late_joiner_waits_for_next_round(server):
    """Round 0 forms with 8 of max 9. A 9th node arriving later is counted for
    round 1 (num_nodes_waiting() == 1 on every member), and when the members
    re-rendezvous round 1 closes with all 9; the late node arrived first, so it
    is rank 0 (ranks follow arrival)."""
    members = [handler(server, "late", 8, 9, last_call_timeout=0.5) for _ in range(8)]
    res0 = Calls(members).join()
    assert sorted(r[1] for r in res0) == list(range(8)) and {r[0] for r in res0} == {0}
    assert [m.num_nodes_waiting() for m in members] == [0] * 8
    late = handler(server, "late", 8, 9, last_call_timeout=0.5)
    late_call = Calls([late])
    wait_until(lambda: all(m.num_nodes_waiting() == 1 for m in members),
               what="members to see the waiting node")
    assert late_call.threads[0].is_alive()  # still waiting: round 1 needs 8 nodes
    res1 = Calls(members).join() + late_call.join()
    assert {r[0] for r in res1} == {1} and {r[2] for r in res1} == {9}
    assert sorted(r[1] for r in res1) == list(range(9))
    assert res1[-1][1] == 0
    assert [h.num_nodes_waiting() for h in members + [late]] == [0] * 9  # full round


@pytest.mark.timeout_s(90)
def test_full_round_does_not_count_redundant_nodes(server):
    hs = [handler(server, "full", 2, 2) for _ in range(2)]
    Calls(hs).join()
    extra = Calls([handler(server, "full", 2, 2, keep_alive_interval=0.2)])
    st = server.client()
    wait_until(lambda: st.add("rdzv/full/1/n", 0) == 1, what="the extra node's arrival")
    assert [h.num_nodes_waiting() for h in hs] == [0, 0]  # torch's redundancy list
    hs[0].set_closed()
    assert isinstance(extra.join()[0], RendezvousClosedError)


@pytest.mark.timeout_s(90)
def test_dead_arrivals_are_excluded(server):
    """Arrival 1 has a stale heartbeat, arrival 2 died before its first one;
    the round closes with the two live nodes as ranks 0 and 1."""
    st = server.client()
    assert st.add("rdzv/dead/0/n", 1) == 1
    st.set("rdzv/dead/0/hb/1", "1000.0 ghost 1 0")
    assert st.add("rdzv/dead/0/n", 1) == 2
    conf = dict(last_call_timeout=0.5, keep_alive_interval=0.2, keep_alive_max_attempt=2)
    hs = [handler(server, "dead", 2, 8, **conf) for _ in range(2)]
    res = Calls(hs).join()
    assert sorted((r[1], r[2]) for r in res) == [(0, 2), (1, 2)], res
    assert st.get("rdzv/dead/0/done") == b"4 1,2"


@pytest.mark.timeout_s(90)
def test_closer_dies_another_node_takes_over(server):
    """The node that set the last call (arrival 2 = min) vanished; after the
    deadline plus the dead time another node takes the lease and closes."""
    st = server.client()
    st.add("rdzv/takeover/0/n", 2)
    st.set("rdzv/takeover/0/hb/1", "1000.0 ghost 1 0")
    st.set("rdzv/takeover/0/hb/2", "1000.0 ghost 2 0")
    st.compare_set("rdzv/takeover/0/lc", "", f"{time.time():.3f} 2")
    conf = dict(keep_alive_interval=0.2, keep_alive_max_attempt=2)
    res = Calls([handler(server, "takeover", 2, 8, **conf) for _ in range(2)]).join()
    assert sorted((r[1], r[2]) for r in res) == [(0, 2), (1, 2)], res
    assert st.get("rdzv/takeover/0/done") == b"4 1,2"


@pytest.mark.timeout_s(60)
def test_set_closed_wakes_waiters_and_rejects_newcomers(server):
    waiting = Calls([handler(server, "closing", 2, 2, keep_alive_interval=0.2)])
    st = server.client()
    wait_until(lambda: st.check(["rdzv/closing/0/hb/1"]), what="the waiter's arrival")
    closer = handler(server, "closing", 2, 2)
    assert not closer.is_closed()
    closer.set_closed()
    assert closer.is_closed()
    assert isinstance(waiting.join()[0], RendezvousClosedError)
    assert st.get("rdzv/closing/0/hb/1").startswith(b"left ")
    with pytest.raises(RendezvousClosedError):
        handler(server, "closing", 2, 2).next_rendezvous()


@pytest.mark.timeout_s(60)
def test_join_timeout(server):
    h = handler(server, "alone", 2, 2, join_timeout=1, keep_alive_interval=0.2)
    with pytest.raises(RendezvousTimeoutError):
        h.next_rendezvous()
    assert server.client().get("rdzv/alone/0/hb/1").startswith(b"left ")


def test_shutdown_closes(server):
    h = handler(server, "shut", 1, 1)
    h.next_rendezvous()
    assert h.shutdown() is True and h.is_closed()
    assert h.get_run_id() == "shut" and h.get_backend() == "ringstore" and h.use_agent_store


def test_shutdown_joins_the_heartbeat_thread(server):
    """Once heartbeats are stopped (shutdown(), a new next_rendezvous()) no
    beat is in flight: the thread is gone."""
    h = handler(server, "hbjoin", 1, 1, keep_alive_interval=0.0001)
    h.next_rendezvous()
    time.sleep(0.05)  # many beats
    beats = [t for t in threading.enumerate() if t.name.startswith("ringstore-rdzv-hb-")]
    assert len(beats) == 1
    h._stop_heartbeats()  # what shutdown() and next_rendezvous() do first
    assert not beats[0].is_alive()
    assert h.shutdown() is True


_EXIT_WHILE_BEATING = r"""
import sys, time
from torch.distributed.elastic.rendezvous import RendezvousParameters
from ringstore.rendezvous import RingstoreRendezvousHandler
p = RendezvousParameters("ringstore", sys.argv[1], sys.argv[2], 1, 1,
                         local_addr="127.0.0.1", keep_alive_interval="0.0001")
RingstoreRendezvousHandler(p).next_rendezvous()


class Teardown:  # finalization runs Python code and lets other threads in,
    def __del__(self):  # as an agent's teardown of torch does
        time.sleep(0.05)


keep = Teardown()
time.sleep(0.05)
sys.exit(0)  # no shutdown(): the interpreter finalizes mid-beat
"""


def test_exit_without_shutdown_while_beating(server):
    """A process that exits with its heartbeat thread mid-request exits 0
    (torchrun's agent for a job that ends without shutdown(), or any exit
    racing a beat).

    Without the atexit hook that stops and joins heartbeats, the daemon
    thread returns from the C++ set() into a finalizing interpreter, which
    ends it with pthread_exit through pybind11's noexcept frames:
    std::terminate, SIGABRT."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _EXIT_WHILE_BEATING, server.endpoint,
                               f"exit{i}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(6)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode(errors="replace")[-2000:]


def test_registry_resolves_the_entry_point(server):
    from torch.distributed.elastic.rendezvous import registry

    params = RendezvousParameters("ringstore", server.endpoint, "reg", 1, 1)
    h = registry.get_rendezvous_handler(params)
    assert type(h).__name__ == "RingstoreRendezvousHandler"


@pytest.mark.timeout_s(60)
def test_round_hint_catches_up(server):
    """A closer died between its done and its hint update: the hint says 0
    while round 0 is closed. Newcomers pass through round 0 (late there),
    form round 1, and its closer moves the hint from 0 straight to 2."""
    st = server.client()
    st.add("rdzv/hint/round", 0)
    st.add("rdzv/hint/0/n", 2)
    st.compare_set("rdzv/hint/0/done", "", "2")
    res = Calls([handler(server, "hint", 2, 2) for _ in range(2)]).join()
    assert sorted((r[0], r[1]) for r in res) == [(1, 0), (1, 1)], res
    assert st.get("rdzv/hint/round") == b"2"
