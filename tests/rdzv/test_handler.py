# SPDX-License-Identifier: MIT
"""RingstoreRendezvousHandler against real servers (ringstore and PyTorch's).

Handlers run in threads, each with its own TCPStore connections, as on
separate nodes. The store-restart tests put conftest's ``proxied`` server
(proxy.py) between them and the store: it drops every connection and
refuses new ones (``down()``/``up()``), or loses one reply; keys are changed
behind the handlers' backs with a direct client while the proxy is down (a
restart that lost the last writes). Tests wait for observable state (keys,
thread exits) under generous bounds; none asserts on timing. The protocol's
own cases, exhaustively and without sockets, are in test_state_machine.py.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import torch.distributed.elastic.utils.store as store_util
from torch.distributed.elastic.rendezvous import (
    RendezvousClosedError,
    RendezvousParameters,
    RendezvousTimeoutError,
)

from ringstore._protocol import Beat
from ringstore.rendezvous import RingstoreRendezvousHandler

FAST = dict(last_call_timeout=0.5, keep_alive_interval=0.2, keep_alive_max_attempt=2,
            commit_wait=0.2)
LEFT_AFTER_SHUTDOWN = {"closed", "round", "gc", "gclease"}

_handlers: list[RingstoreRendezvousHandler] = []


@pytest.fixture(autouse=True)
def _stop_heartbeats():
    yield
    for h in _handlers:
        h._stop_heartbeats()  # before the server goes away
    _handlers.clear()


def handler(server, run_id, nmin, nmax, **conf):
    conf = {"last_call_timeout": 60, "join_timeout": 60, "read_timeout": 30,
            "commit_wait": 0.2, **conf}
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


def run_keys(st, run_id: str) -> set[str]:
    base = f"rdzv/{run_id}/"
    return {k[len(base):] for k in st.list_keys() if k.startswith(base)}


def ranks(res) -> list[tuple[int, int]]:
    assert all(isinstance(r, tuple) for r in res), res
    return sorted((r[1], r[2]) for r in res)


# ------------------------------------------------------------- the handler
@pytest.mark.timeout_s(90)
def test_exact_ranks_and_world(server):
    n = 24
    res = Calls([handler(server, "exact", n, n) for _ in range(n)]).join()
    assert ranks(res) == [(i, n) for i in range(n)]
    assert {r[0] for r in res} == {0}
    # bootstrap: the workers' store is this same server
    info = res[0][3]
    assert (info.bootstrap_store_info.master_addr, info.bootstrap_store_info.master_port) == \
        (server.host, server.port)


@pytest.mark.timeout_s(90)
def test_late_joiner_is_counted_by_num_nodes_waiting(server):
    members = [handler(server, "late", 2, 3, **FAST) for _ in range(2)]
    assert ranks(Calls(members).join()) == [(0, 2), (1, 2)]
    assert [m.num_nodes_waiting() for m in members] == [0, 0]
    late = Calls([handler(server, "late", 2, 3, **FAST)])
    wait_until(lambda: all(m.num_nodes_waiting() == 1 for m in members),
               what="members to see the waiting node")
    res = Calls(members).join() + late.join()
    assert {r[0] for r in res} == {1} and ranks(res) == [(0, 3), (1, 3), (2, 3)]
    assert res[-1][1] == 0  # the late node arrived first


@pytest.mark.timeout_s(60)
def test_closed_and_timeout_errors(server):
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
    with pytest.raises(RendezvousTimeoutError):
        handler(server, "alone", 2, 2, join_timeout=1, keep_alive_interval=0.2).next_rendezvous()


def test_shutdown_closes_and_collects(server):
    hs = [handler(server, "shut", 2, 2, **FAST) for _ in range(2)]
    Calls(hs).join()
    assert all(h.shutdown() is True for h in hs)
    assert hs[0].is_closed()
    assert hs[0].get_run_id() == "shut" and hs[0].get_backend() == "ringstore"
    assert hs[0].use_agent_store
    assert run_keys(server.client(), "shut") == LEFT_AFTER_SHUTDOWN


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
                         local_addr="127.0.0.1", keep_alive_interval="0.0001",
                         commit_wait="0")
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
    thread returns from the C++ request into a finalizing interpreter, which
    ends it with pthread_exit through pybind11's noexcept frames:
    std::terminate, SIGABRT."""
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


# --------------------------------------------------------- store restarts
@pytest.mark.timeout_s(90)
def test_waiters_survive_a_store_restart(proxied):
    """Three nodes wait for a fourth; the store goes away (every connection
    reset, new ones refused) and comes back. They reconnect, re-own their
    slots, and the round forms when the fourth arrives."""
    hs = [handler(proxied, "wait", 4, 4, **FAST) for _ in range(4)]
    direct = proxied.direct()
    waiting = Calls(hs[:3])
    wait_until(lambda: direct.check([f"rdzv/wait/0/hb/{i}" for i in (1, 2, 3)]),
               what="three arrivals")
    proxied.proxy.down()
    proxied.proxy.up()
    wait_until(lambda: all(h._client.generation >= 1 for h in hs[:3]), what="reconnects")
    fourth = Calls(hs[3:])
    res = waiting.join() + fourth.join()
    assert ranks(res) == [(i, 4) for i in range(4)]


@pytest.mark.timeout_s(90)
def test_members_and_the_agents_store_survive_a_store_restart(proxied):
    """Members' heartbeats reconnect (they used to stop), num_nodes_waiting()
    works afterwards, and the agents' store (RendezvousInfo.store) answers
    and runs torch's barrier across the restart."""
    hs = [handler(proxied, "members", 2, 3, **FAST) for _ in range(2)]
    infos = [r[3] for r in Calls(hs).join()]
    infos[0].store.set("torchelastic/role_info/0", b"before")
    direct = proxied.direct()

    def seq(a):
        return Beat.parse(direct.get(f"rdzv/members/0/hb/{a}")).seq

    before = [seq(1), seq(2)]
    proxied.proxy.down()
    proxied.proxy.up()
    wait_until(lambda: seq(1) > before[0] + 2 and seq(2) > before[1] + 2,
               what="heartbeats after the restart")
    assert all(h._client.generation >= 1 for h in hs)
    assert [h.num_nodes_waiting() for h in hs] == [0, 0]
    assert infos[1].store.get("torchelastic/role_info/0") == b"before"
    done = []

    def barrier(i):
        store_util.barrier(infos[i].store, 2, "torchelastic/exit", barrier_timeout=30)
        done.append(i)
    ts = [threading.Thread(target=barrier, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sorted(done) == [0, 1]


@pytest.mark.timeout_s(90)
def test_a_lost_arrival_reply_is_not_resent(proxied):
    """The arrival ADD reaches the store but its reply is lost: the node
    does not send it again; it arrives anew, and the first number is a slot
    nobody claims, dead at the close (one dead time later)."""
    a, b = (handler(proxied, "lostadd", 2, 3, **FAST) for _ in range(2))
    direct = proxied.direct()
    proxied.proxy.drop_reply_to(b"rdzv/lostadd/0/n")
    first = Calls([a])
    wait_until(lambda: direct.check(["rdzv/lostadd/0/hb/2"]), what="the second arrival")
    res = Calls([b]).join() + first.join()
    assert ranks(res) == [(0, 2), (1, 2)]
    assert direct.get("rdzv/lostadd/0/n") == b"3"  # two arrivals of a, one of b: not re-sent
    assert direct.get("rdzv/lostadd/0/done") == b"3 1"


@pytest.mark.timeout_s(90)
def test_a_counter_rolled_back_behind_the_nodes_never_duplicates_a_slot(proxied):
    """While the store is down, its arrival counter and a waiter's slot are
    rolled back (a restart that lost its last second). The waiter re-owns
    its slot; the next node is handed the same number, fails to claim it,
    arrives again, and cannot get the same rank."""
    a, b = (handler(proxied, "rollback", 2, 3, **FAST) for _ in range(2))
    direct = proxied.direct()
    first = Calls([a])
    wait_until(lambda: direct.check(["rdzv/rollback/0/hb/1"]), what="the arrival")
    proxied.proxy.down()
    direct.delete_key("rdzv/rollback/0/n")
    direct.delete_key("rdzv/rollback/0/hb/1")
    proxied.proxy.up()
    wait_until(lambda: direct.check(["rdzv/rollback/0/hb/1"]), what="the slot re-owned")
    assert direct.get("rdzv/rollback/0/hb/1").endswith(a._who.encode())
    res = Calls([b]).join() + first.join()
    assert ranks(res) == [(0, 2), (1, 2)]
    assert a._slot == 1 and b._slot == 2  # b was handed 1 first: its claim failed
    assert direct.get("rdzv/rollback/0/n") == b"2"


@pytest.mark.timeout_s(90)
def test_members_republish_what_the_store_lost(proxied):
    """The store comes back without the round's result, the hint and the
    slots (no write log): the members put them back when they reconnect,
    and their next round is round 1, not a new round 0."""
    hs = [handler(proxied, "lost", 2, 2, **FAST) for _ in range(2)]
    Calls(hs).join()
    direct = proxied.direct()
    done = direct.get("rdzv/lost/0/done")
    proxied.proxy.down()
    for k in ("rdzv/lost/0/done", "rdzv/lost/round", "rdzv/lost/0/hb/1", "rdzv/lost/0/hb/2",
              "rdzv/lost/0/n"):
        direct.delete_key(k)
    proxied.proxy.up()
    wait_until(lambda: direct.check(["rdzv/lost/0/done", "rdzv/lost/round"]),
               what="the members' re-publishing")
    assert direct.get("rdzv/lost/0/done") == done
    assert int(direct.get("rdzv/lost/round")) >= 1
    assert {r[0] for r in Calls(hs).join()} == {1}


# ---------------------------------------------------------------- keys
@pytest.mark.timeout_s(120)
def test_keys_stay_bounded_over_many_rounds(server):
    """Ten rounds of three nodes that re-join each time, writing what
    torchrun's agents and gloo's workers write: the run ends with the last
    rounds' keys, and after shutdown with O(1) keys (counted with
    list_keys and num_keys, which both servers answer)."""
    st = server.client()
    before = st.num_keys()
    hs = [handler(server, "soak", 3, 3, **FAST) for _ in range(3)]
    per_round = []
    for r in range(10):
        res = Calls(hs).join()
        assert ranks(res) == [(0, 3), (1, 3), (2, 3)]
        for h, (_, rank, world, info) in zip(hs, res):
            info.store.set(f"torchelastic/role_info/{rank}", b"x")  # what the agents write
            st.set(f"rdzv/soak/{r}/worker/default_pg/0//marker/{rank}", "1")  # and workers
        per_round.append(len(run_keys(st, "soak")))
    # the closers keep two rounds behind: counts stop growing
    assert max(per_round[4:]) <= max(per_round[:4]) + 3, per_round
    assert max(int(k.split("/")[0]) for k in run_keys(st, "soak") if k[0].isdigit()) == 9
    assert min(int(k.split("/")[0]) for k in run_keys(st, "soak") if k[0].isdigit()) >= 7
    for h in hs:
        assert h.shutdown() is True
    assert run_keys(st, "soak") == LEFT_AFTER_SHUTDOWN
    assert st.num_keys() - before == len(LEFT_AFTER_SHUTDOWN)
