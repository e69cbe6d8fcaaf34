"""PrefixStore over a TCPStore client (PROTOCOL §5 key namespace, §13 PrefixTCPStoreTest)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist


@pytest.fixture
def pair(server):
    tcp = server.client(world_size=1)
    return dist.PrefixStore("test_prefix", tcp), tcp


def test_set_get_check_through_prefix(pair):
    ps, tcp = pair
    ps.add("key", 1)
    ps.add("key", 2)
    ps.add("key", 3)
    ps.set("key0", "value0")
    ps.add("key3", 1)
    ps.set("key1", "value1")
    ps.add("key3", 2)
    ps.set("key2", "value2")
    ps.add("key3", 3)
    ps.add("key3", 4)
    ps.add("key3", 5)
    ps.add("key3", 6)
    assert ps.num_keys() == 6  # not filtered by prefix: 5 keys + init/
    assert ps.get("key") == b"6"
    assert ps.get("key3") == b"21"
    assert ps.check(["key3"])
    assert not ps.check(["Randomkey3"])
    # the prefix is really on the wire key
    assert tcp.get("test_prefix/key0") == b"value0"
    assert tcp.check(["test_prefix/key3"])
    assert not tcp.check(["key3"])


def test_compare_set_append_multi_through_prefix(pair):
    ps, tcp = pair
    assert ps.compare_set("cs", "", "a") == b"a"
    assert ps.compare_set("cs", "a", "b") == b"b"
    assert tcp.get("test_prefix/cs") == b"b"
    ps.append("ap", "po")
    ps.append("ap", "tato")
    assert tcp.get("test_prefix/ap") == b"potato"
    ps.multi_set(["m1", "m2"], ["x", "y"])
    assert ps.multi_get(["m2", "m1"]) == [b"y", b"x"]
    assert tcp.multi_get(["test_prefix/m1", "test_prefix/m2"]) == [b"x", b"y"]
    assert ps.delete_key("m1")
    assert not tcp.check(["test_prefix/m1"])


def test_wait_through_prefix(server, pair):
    ps, _ = pair
    other = dist.PrefixStore("test_prefix", server.client())
    with pytest.raises(dist.DistStoreError, match="timeout"):
        ps.wait(["w"], timedelta(milliseconds=200))
    t = threading.Thread(target=lambda: ps.wait(["w"], timedelta(seconds=10)), daemon=True)
    t.start()
    time.sleep(0.3)
    other.set("w", "1")
    t.join(10)
    assert not t.is_alive()
    assert ps.get("w") == b"1"


def test_list_keys_through_prefix(pair):
    ps, tcp = pair
    ps.set("a", "1")
    ps.set("b/c", "2")
    tcp.set("outside", "3")
    nested = dist.PrefixStore("inner", ps)
    nested.set("deep", "4")
    assert sorted(ps.list_keys()) == ["a", "b/c", "inner/deep"]
    assert nested.list_keys() == ["deep"]
    assert sorted(tcp.list_keys()) == ["outside", "test_prefix/a", "test_prefix/b/c",
                                       "test_prefix/inner/deep"]


def test_queues_through_prefix(pair):
    ps, tcp = pair
    ps.queue_push("q", "1")
    assert tcp.queue_len("test_prefix/q") == 1
    assert ps.queue_len("q") == 1
    assert ps.queue_pop("q") == b"1"
    with pytest.raises(dist.QueueEmptyError):
        ps.queue_pop("q", block=False)


def test_barrier_through_prefix_uses_fallback(server, pair):
    # 2.13's PrefixStore does not forward barrier(): the Store base-class fallback does
    # ADD <p>/<key>/num_members, SET <p>/<key>/last_member, WAIT.
    ps, tcp = pair
    ps.barrier("b", 1)
    assert sorted(tcp.list_keys()) == ["test_prefix/b/last_member", "test_prefix/b/num_members"]
    others = [dist.PrefixStore("test_prefix", server.client()) for _ in range(3)]
    out = []

    def go(s):
        s.barrier("b3", 3, timedelta(seconds=10))
        out.append(1)

    ts = [threading.Thread(target=go, args=(s,), daemon=True) for s in others]
    for t in ts:
        t.start()
    for t in ts:
        t.join(15)
    assert len(out) == 3
    assert tcp.get("test_prefix/b3/num_members") == b"3"


def test_underlying_store(pair):
    ps, tcp = pair
    nested = dist.PrefixStore("x", ps)
    assert nested._underlying_non_prefix_store.port == tcp.port
