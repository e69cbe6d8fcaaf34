# SPDX-License-Identifier: MIT
"""ringstore._client against fake connections and a fake clock: what is
re-sent after a reconnect, what is not, torch's backoff, the reconnect
deadline, and the agents' store (AgentStore). No socket, no sleep."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
import torch.distributed as dist

from ringstore._client import AgentStore, Backoff, ResilientClient, StoreUnreachable
from ringstore._protocol import Restarted


class Clock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def time(self):
        return self.now

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.slept.append(s)
        self.now += s


class Backend:
    """The server: a dict, an incarnation (bumped by a restart), a down
    window, and a log of what reached it."""

    def __init__(self, clock):
        self.clock, self.data, self.incarnation, self.up_at = clock, {}, 0, 0.0
        self.log: list[tuple] = []
        self.lose_reply_of = None  # an op name: its next reply is lost

    def restart(self, down=0.0, lose=()):
        self.incarnation += 1
        self.up_at = self.clock.now + down
        for k in lose:
            self.data.pop(k, None)

    def connect(self, timeout):
        if self.clock.now < self.up_at:
            self.clock.now += min(timeout, 1.0)  # a refused attempt takes time
            raise dist.DistNetworkError("connection refused")
        return Conn(self)


class Conn:
    def __init__(self, b):
        self.b, self.inc, self.timeout = b, b.incarnation, None

    def _op(self, name, fn):
        if self.inc != self.b.incarnation:
            raise dist.DistNetworkError("Connection reset by peer")
        self.b.log.append((name, self.inc))
        out = fn()
        if self.b.lose_reply_of == name:
            self.b.lose_reply_of = None
            self.b.incarnation += 1  # the connection drops after the server applied it
            raise dist.DistNetworkError("Failed to recv, got 0 bytes")
        return out

    def set_timeout(self, t):
        self.timeout = t

    def get(self, k):
        def f():
            if k not in self.b.data:
                raise dist.DistStoreError("wait timeout")
            return self.b.data[k]
        return self._op("get", f)

    def set(self, k, v):
        value = v if isinstance(v, bytes) else str(v).encode()
        return self._op("set", lambda: self.b.data.__setitem__(k, value))

    def add(self, k, n):
        def f():
            v = int(self.b.data.get(k, b"0")) + n
            self.b.data[k] = str(v).encode()
            return v
        return self._op("add", f)

    def check(self, keys):
        return self._op("check", lambda: all(k in self.b.data for k in keys))

    def compare_set(self, k, exp, des):
        def f():
            e = exp.encode() if isinstance(exp, str) else exp
            d = des.encode() if isinstance(des, str) else des
            if k not in self.b.data:
                if e == b"":
                    self.b.data[k] = d
                    return d
                return e
            if self.b.data[k] == e:
                self.b.data[k] = d
            return self.b.data[k]
        return self._op("compare_set", f)

    def multi_get(self, keys):
        return self._op("multi_get", lambda: [self.b.data[k] for k in keys])

    def multi_set(self, keys, values):
        def f():
            for k, v in zip(keys, values):
                self.b.data[k] = v.encode() if isinstance(v, str) else v
        return self._op("multi_set", f)

    def wait(self, keys, timeout):
        def f():
            self.b.waits.append(timeout)
            if not all(k in self.b.data for k in keys):
                raise dist.DistStoreError("wait timeout")
        return self._op("wait", f)


@pytest.fixture
def env():
    clock = Clock()
    b = Backend(clock)
    b.waits = []
    return clock, b


def client(env, **kw):
    clock, b = env
    return ResilientClient(b.connect, kw.pop("reconnect_timeout", 60.0), 30.0, clock, **kw)


def test_reads_are_resent_after_a_reconnect_hooks_first(env):
    clock, b = env
    c = client(env)
    c.call("set", "k", "v", resend=True)
    c.set_hook("h", lambda store: b.log.append(("hook", store.inc)))
    b.restart(down=5.0)
    assert c.call("get", "k", resend=True) == b"v"
    assert c.generation == 1
    # the hook ran on the new connection before the re-sent GET
    assert b.log[-2:] == [("hook", 1), ("get", 1)]
    assert clock.now >= 5.0


def test_a_write_whose_reply_is_lost_is_not_resent(env):
    clock, b = env
    c = client(env)
    c.call("add", "n", 1, resend=False)
    b.lose_reply_of = "add"
    with pytest.raises(Restarted) as e:
        c.call("add", "n", 1, resend=False)
    assert e.value.lost == ("add", ("n", 1))
    assert b.data["n"] == b"2"  # applied once, never twice
    assert c.generation == 1  # and the connection is back for what follows
    assert c.call("add", "n", 0, resend=True) == 2


def test_reconnect_gives_up_after_reconnect_timeout(env):
    clock, b = env
    c = client(env, reconnect_timeout=60.0)
    b.restart(down=1e9)
    with pytest.raises(StoreUnreachable):
        c.call("get", "k", resend=True)
    assert 60.0 <= clock.now < 62.0
    # torch's schedule between attempts, capped by what is left of the deadline
    assert clock.slept[0] <= 0.75 and clock.slept[1] <= 1.125


def test_backoff_is_torchs_exponential_with_jitter():
    b = Backoff(random.Random(7))
    got = [b.next() for _ in range(20)]
    for i, d in enumerate(got):
        base = min(0.5 * 1.5 ** i, 60.0)
        assert base * 0.5 <= d <= base * 1.5, (i, d)
    assert max(got) <= 90.0


def test_the_client_comes_back_when_the_store_does(env):
    clock, b = env
    c = client(env)
    b.restart(down=20.0)
    assert c.call("check", ["x"], resend=True) is False
    assert 20.0 <= clock.now < 40.0 and c.generation == 1


def agent_store(env):
    c = client(env)
    return AgentStore("rdzv/j/0/agent", c), c


def test_agent_store_prefixes_like_prefix_store(env):
    clock, b = env
    st, _ = agent_store(env)
    st.set("torchelastic/role_info/0", b"x")
    assert "rdzv/j/0/agent/torchelastic/role_info/0" in b.data
    assert st.get("torchelastic/role_info/0") == b"x"
    assert isinstance(st, dist.Store)


def test_agent_store_recreates_its_lost_keys_but_not_over_others(env):
    clock, b = env
    st, c = agent_store(env)
    st.set("torchelastic/role_info/1", b"mine")
    st.multi_set(["torchelastic/assigned_ranks/0", "torchelastic/assigned_ranks/1"], ["[0]", "[2]"])
    b.restart(down=1.0, lose=["rdzv/j/0/agent/torchelastic/role_info/1",
                              "rdzv/j/0/agent/torchelastic/assigned_ranks/1"])
    b.data["rdzv/j/0/agent/torchelastic/assigned_ranks/1"] = b"someone else's"
    assert st.get("torchelastic/role_info/1") == b"mine"  # re-created by the hook
    assert b.data["rdzv/j/0/agent/torchelastic/assigned_ranks/1"] == b"someone else's"


def test_agent_store_add_with_a_lost_reply_raises_and_is_not_resent(env):
    clock, b = env
    st, _ = agent_store(env)
    b.lose_reply_of = "add"
    with pytest.raises(dist.DistNetworkError):
        st.add("torchelastic/exit/num_members", 1)
    assert b.data["rdzv/j/0/agent/torchelastic/exit/num_members"] == b"1"
    assert st.add("torchelastic/exit/num_members", 0) == 1  # ADD 0 is a read: re-sent


def test_agent_store_add_on_a_connection_that_died_idle_succeeds(env):
    """The exit barrier's ADD comes after training: if the store restarted
    meanwhile, the agents' connection is dead. A probe replaces it first,
    so the ADD is sent (once) on a live connection instead of failing."""
    clock, b = env
    st, c = agent_store(env)
    b.restart(down=2.0)
    assert st.add("torchelastic/exit/num_members", 1) == 1
    assert c.generation == 1
    assert [e for e in b.log if e[0] == "add"] == [("add", 1)]


def test_agent_store_compare_set_with_a_lost_reply_reads_the_key(env):
    clock, b = env
    st, _ = agent_store(env)
    b.lose_reply_of = "compare_set"
    assert st.compare_set("k", "", "v") == b"v"
    assert b.log.count(("compare_set", 0)) == 1


def test_agent_store_wait_is_resent_with_what_is_left(env):
    clock, b = env
    st, _ = agent_store(env)
    b.restart(down=3.0)  # the first WAIT finds the connection gone
    with pytest.raises(dist.DistStoreError):
        st.wait(["never"], timedelta(seconds=10))
    assert b.waits and b.waits[-1].total_seconds() <= 7.0 + 1e-6


def test_agent_store_timeout_applies_to_new_connections(env):
    clock, b = env
    st, c = agent_store(env)
    st.set_timeout(timedelta(seconds=300))
    assert st.timeout == timedelta(seconds=300)
    b.restart()
    st.check(["x"])
    assert c._store.timeout == timedelta(seconds=300)
