"""Every public TCPStore method, through an unmodified torch client (PROTOCOL §5, §8, §13)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist

from conftest import CLIENT_TIMEOUT, TARGET


def run_threads(fns, timeout=20.0):
    """Run callables in threads; re-raise the first exception; fail on a hang."""
    errors, results = [], [None] * len(fns)

    def wrap(i, fn):
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i, f), daemon=True) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in ts), f"threads still running after {timeout}s"
    if errors:
        raise errors[0]
    return results


# ------------------------------------------------------------------ set/get/add/check


def test_set_get(store):
    store.set("key", "value")
    assert store.get("key") == b"value"
    store.set("key", b"other")  # overwrite
    assert store.get("key") == b"other"
    store.set("empty", b"")
    assert store.get("empty") == b""


def test_set_get_check_like_upstream(server):
    # test_store.py StoreTestBase.test_set_get_check, TCPStore flavour (world_size -> init/)
    fs = server.client(world_size=1)
    fs.add("key", 1)
    fs.add("key", 2)
    fs.add("key", 3)
    fs.set("key0", "value0")
    fs.add("key3", 1)
    fs.set("key1", "value1")
    fs.add("key3", 2)
    fs.set("key2", "value2")
    fs.add("key3", 3)
    fs.add("key3", 4)
    fs.add("key3", 5)
    fs.add("key3", 6)
    assert fs.num_keys() == 6  # 5 user keys + init/
    assert fs.get("key") == b"6"
    assert fs.get("key0") == b"value0"
    assert fs.get("key1") == b"value1"
    assert fs.get("key2") == b"value2"
    assert fs.get("key3") == b"21"
    assert fs.check(["key3"])
    assert not fs.check(["Randomkey3"])
    fs.set("-key3", "7")
    assert fs.get("-key3") == b"7"
    assert fs.delete_key("-key3")
    assert fs.num_keys() == 6


def test_add(store):
    assert store.add("ctr", 1) == 1
    assert store.add("ctr", 41) == 42
    assert store.add("ctr", -50) == -8
    assert store.get("ctr") == b"-8"
    assert store.add("ctr", 0) == -8
    assert store.add("zero", 0) == 0  # add 0 creates the key
    assert store.get("zero") == b"0"
    big = 2**62
    assert store.add("big", big) == big
    assert store.add("big", big - 1) == 2**63 - 1


def test_add_int64_range(store):
    assert store.add("b", 2**63 - 1) == 2**63 - 1
    assert store.get("b") == str(2**63 - 1).encode()
    assert store.add("b", -(2**63 - 1)) == 0
    assert store.add("n", -(2**63)) == -(2**63)
    assert store.get("n") == str(-(2**63)).encode()


def test_set_then_add(store):
    store.set("k", "5")
    assert store.add("k", 1) == 6
    assert store.get("k") == b"6"
    store.set("sp", "  -12xyz")  # std::stoll: leading spaces, sign, trailing garbage ignored
    assert store.add("sp", 2) == -10
    assert store.get("sp") == b"-10"


def test_check(store):
    assert store.check([])
    assert not store.check(["a"])
    store.set("a", "1")
    assert store.check(["a"])
    assert not store.check(["a", "b"])
    store.set("b", "")
    assert store.check(["a", "b"])


# ------------------------------------------------------------------ compare_set


def test_compare_set_four_branches(store):
    # missing key, non-empty expected: nothing stored, reply = expected
    assert store.compare_set("cs", "expected", "desired") == b"expected"
    assert not store.check(["cs"])
    assert store.num_keys() == 0
    # missing key, empty expected: create with desired
    assert store.compare_set("cs", "", "first") == b"first"
    assert store.get("cs") == b"first"
    # present, matches: swap, reply = new value
    assert store.compare_set("cs", "first", "second") == b"second"
    assert store.get("cs") == b"second"
    # present, mismatch: nothing, reply = current
    assert store.compare_set("cs", "first", "third") == b"second"
    assert store.get("cs") == b"second"
    # present, prefix-of-current expected does not match (length matters)
    assert store.compare_set("cs", "secon", "x") == b"second"
    # present with empty value: empty expected matches
    store.set("e", b"")
    assert store.compare_set("e", "", "filled") == b"filled"


def test_compare_set_like_upstream(store):
    missing_key_result = store.compare_set("cs_key0", "wrong_old_value", "new_value0")
    assert missing_key_result == b"wrong_old_value"
    store.set("cs_key0", "value0")
    assert store.get("cs_key0") == b"value0"
    assert store.compare_set("cs_key0", "wrong_old_value", "new_value0") == b"value0"
    assert store.compare_set("cs_key0", "value0", "new_value0") == b"new_value0"
    assert store.get("cs_key0") == b"new_value0"
    assert store.compare_set("cs_key1", "", "new_value1") == b"new_value1"
    assert store.get("cs_key1") == b"new_value1"


def test_compare_set_releases_waiter(server):
    a, b = server.client(), server.client()
    t = threading.Thread(target=lambda: a.wait(["csw"], timedelta(seconds=10)), daemon=True)
    t.start()
    time.sleep(0.3)
    assert b.compare_set("csw", "", "v") == b"v"
    t.join(10)
    assert not t.is_alive()
    assert a.get("csw") == b"v"


# ------------------------------------------------------------------ wait


def test_wait_present_returns(store):
    store.set("w1", "x")
    store.set("w2", "y")
    store.wait(["w1", "w2"])
    store.wait(["w1"], timedelta(seconds=1))


def test_wait_timeout_then_store_still_works(store):
    with pytest.raises(dist.DistStoreError, match="[Tt]imeout"):
        store.wait(["bad_key"], timedelta(milliseconds=250))
    # same connection: CANCEL_WAIT reply must have kept the stream in sync
    store.set("the_key", "v")
    assert store.get("the_key") == b"v"
    assert store.add("n", 3) == 3
    with pytest.raises(dist.DistStoreError, match="[Tt]imeout"):
        store.wait(["bad_key", "the_key"], timedelta(milliseconds=100))
    assert store.compare_set("the_key", "v", "w") == b"w"
    assert store.num_keys() == 2


def test_get_timeout_message_and_recovery(store):
    store.set_timeout(timedelta(milliseconds=100))
    with pytest.raises(dist.DistStoreError, match="wait timeout after 100ms, keys: /nonexistent key"):
        store.get("nonexistent key")
    store.set_timeout(CLIENT_TIMEOUT)
    store.set("the_key", "x")
    assert store.get("the_key") == b"x"


def test_simple_wait_upstream(store):
    with pytest.raises(RuntimeError, match="[t -i]imeout"):
        store.wait(["bad_key"], timedelta(seconds=0.25))
    store.add("good_key", 1)
    store.wait(["good_key"])


def test_wait_released_by_another_client(server):
    # TestMultiThreadedWait: one client waits, another sets the key
    waiter, setter = server.client(), server.client()
    done = threading.Event()

    def wait():
        waiter.wait(["key1"], timedelta(seconds=5))
        done.set()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    time.sleep(0.5)
    assert not done.is_set()
    setter.set("key1", "value1")
    t.join(10)
    assert done.is_set()
    assert waiter.get("key1") == b"value1"
    # again through PrefixStore on both sides
    pw, ps = dist.PrefixStore("p", waiter), dist.PrefixStore("p", setter)
    done.clear()

    def pwait():
        pw.wait(["key2"], timedelta(seconds=5))
        done.set()

    t = threading.Thread(target=pwait, daemon=True)
    t.start()
    time.sleep(0.3)
    ps.set("key2", "v2")
    t.join(10)
    assert done.is_set()


def test_wait_multi_key_released_by_last(server):
    w, s = server.client(), server.client()
    res = {}

    def wait():
        w.wait(["a", "b", "c"], timedelta(seconds=10))
        res["t"] = time.monotonic()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    s.set("a", "1")
    s.add("b", 1)
    time.sleep(0.4)
    assert "t" not in res
    t_set = time.monotonic()
    s.append("c", "x")
    t.join(10)
    assert res["t"] >= t_set


def test_waiters_released_by_add_and_append(server):
    a, b, c = server.client(), server.client(), server.client()
    run = lambda st, k: (lambda: st.wait([k], timedelta(seconds=10)))  # noqa: E731
    th = [threading.Thread(target=run(a, "viaadd"), daemon=True),
          threading.Thread(target=run(b, "viaappend"), daemon=True)]
    for t in th:
        t.start()
    time.sleep(0.3)
    c.add("viaadd", 0)
    c.append("viaappend", "z")
    for t in th:
        t.join(10)
        assert not t.is_alive()


# ------------------------------------------------------------------ delete / num_keys


def test_numkeys_delkeys_like_upstream(server):
    fs = server.client(world_size=1)
    assert fs.num_keys() == 1  # init/
    fs.add("key", 1)
    fs.set("key0", "value0")
    fs.add("key3", 1)
    fs.set("key1", "value1")
    assert fs.num_keys() == 5
    assert fs.delete_key("key")
    assert fs.num_keys() == 4
    fs.set_timeout(timedelta(seconds=2))
    with pytest.raises(RuntimeError):
        fs.get("key")
    assert fs.delete_key("key0")
    assert fs.delete_key("key3")
    assert fs.num_keys() == 2
    fs.set("key4", "value2")
    assert fs.num_keys() == 3
    assert fs.get("key1") == b"value1"
    assert fs.get("key4") == b"value2"


def test_delete_missing_and_num_keys(store):
    assert store.num_keys() == 0
    assert store.delete_key("nope") is False
    store.set("x", "1")
    assert store.delete_key("x") is True
    assert store.delete_key("x") is False
    assert store.num_keys() == 0


def test_num_keys_counts_init_per_world_size(server):
    c1 = server.client(world_size=3)
    assert c1.num_keys() == 1
    server.client(world_size=3)
    server.client(world_size=3)
    assert c1.num_keys() == 1  # one init/ key however many joined
    # init/ is invisible to list_keys but is the counter of joined clients: its
    # value is observable only through num_keys; prove the count via a raw-key reader below.
    assert c1.list_keys() == []
    server.client()  # no world_size: no init/ traffic
    server.client(world_size=3, wait_for_workers=False)  # no ADD either
    assert c1.num_keys() == 1


def test_delete_does_not_release_waiter(server):
    a, b = server.client(), server.client()
    done = threading.Event()
    b.set("dk", "1")
    b.delete_key("dk")

    def wait():
        a.wait(["dk"], timedelta(seconds=10))
        done.set()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    time.sleep(0.3)
    b.set("other", "x")
    b.delete_key("dk")
    time.sleep(0.3)
    assert not done.is_set()
    b.set("dk", "2")
    t.join(10)
    assert done.is_set()


# ------------------------------------------------------------------ append / multi


def test_append(store):
    store.set("foo", "po")
    store.append("foo", "tato")
    assert store.get("foo") == b"potato"
    store.append("bar", "po")  # creates
    store.append("bar", "tato")
    assert store.get("bar") == b"potato"
    store.append("bin", bytes([0, 255]))
    store.append("bin", bytes([1, 254]))
    assert store.get("bin") == bytes([0, 255, 1, 254])


def test_multi_set_multi_get(store):
    store.multi_set(["foo", "bar"], ["po", "tato"])
    assert store.get("foo") == b"po"
    assert store.get("bar") == b"tato"
    assert store.multi_get(["bar", "foo"]) == [b"tato", b"po"]
    keys = [f"k{i}" for i in range(200)]
    vals = [f"v{i}".encode() * (i % 7) for i in range(200)]
    store.multi_set(keys, vals)
    assert store.multi_get(keys) == vals
    assert store.multi_get([]) == []
    store.multi_set(["dup", "dup"], ["1", "2"])  # applied in order
    assert store.get("dup") == b"2"


def test_multi_get_mixed_sizes_large_replies(store):
    """Short values are copied into the reply, long ones (>= 4 KiB) sent by
    reference, missing keys are empty; big replies reuse pooled buffers."""
    keys = [f"mix{i}" for i in range(300)]
    vals = []
    for i in range(300):
        if i % 37 == 5:
            vals.append(bytes([i % 251]) * (4096 + i))  # by reference
        elif i % 11 == 3:
            vals.append(b"")
        else:
            vals.append(f"v{i}".encode() * 20)
    store.multi_set(keys, vals)
    ask = keys + ["mix-missing"] + keys[::-1]
    want = vals + [b""] + vals[::-1]
    store.set_timeout(timedelta(milliseconds=500))
    with pytest.raises(dist.DistStoreError, match="[Tt]imeout"):
        store.multi_get(ask)  # multi_get waits for every key: mix-missing is absent
    store.set_timeout(timedelta(seconds=30))
    store.set("mix-missing", "")
    for _ in range(3):  # repeated large replies on one connection
        assert store.multi_get(ask) == want
    uniform = [f"u{i}" for i in range(782)]
    store.multi_set(uniform, [bytes([i % 256]) * 128 for i in range(782)])
    for _ in range(3):
        assert store.multi_get(uniform) == [bytes([i % 256]) * 128 for i in range(782)]


def test_multi_get_times_out_on_missing(store):
    store.set("present", "1")
    store.set_timeout(timedelta(milliseconds=200))
    with pytest.raises(dist.DistStoreError, match="timeout"):
        store.multi_get(["present", "absent"])
    store.set_timeout(CLIENT_TIMEOUT)
    assert store.multi_get(["present"]) == [b"1"]


def test_multi_set_releases_waiter(server):
    a, b = server.client(), server.client()
    t = threading.Thread(target=lambda: a.wait(["m1", "m2"], timedelta(seconds=10)), daemon=True)
    t.start()
    time.sleep(0.3)
    b.multi_set(["m1", "m2"], ["x", "y"])
    t.join(10)
    assert not t.is_alive()


# ------------------------------------------------------------------ queues


def test_queues(store):
    assert not store.check(["foo"])
    assert store.queue_len("foo") == 0
    store.queue_push("foo", "1")
    store.queue_push("foo", "2")
    assert store.check(["foo"])
    assert store.queue_len("foo") == 2
    store.wait(["foo"])
    assert store.queue_pop("foo") == b"1"
    assert store.queue_pop("foo") == b"2"
    assert not store.check(["foo"])
    assert store.queue_len("foo") == 0
    # queues are not KV keys
    assert store.num_keys() == 0
    assert store.list_keys() == []


def test_queues_nonblocking(store):
    with pytest.raises(dist.QueueEmptyError, match="empty"):
        store.queue_pop("foo", block=False)
    store.queue_push("foo", "a")
    assert store.queue_pop("foo", block=False) == b"a"
    with pytest.raises(dist.QueueEmptyError):
        store.queue_pop("foo", block=False)
    # still usable
    store.set("after", "ok")
    assert store.get("after") == b"ok"


def test_queue_and_kv_are_separate_namespaces(store):
    store.set("q", "kv")
    store.queue_push("q", "queued")
    assert store.get("q") == b"kv"
    assert store.queue_len("q") == 1
    assert store.queue_pop("q") == b"queued"
    assert store.get("q") == b"kv"
    store.delete_key("q")
    assert store.queue_len("q") == 0


def test_queues_timeout(store):
    store.set_timeout(timedelta(milliseconds=10))
    with pytest.raises(dist.DistStoreError, match="timeout"):
        store.queue_pop("missing")
    store.set_timeout(CLIENT_TIMEOUT)
    store.queue_push("missing", "x")
    assert store.queue_pop("missing") == b"x"


def test_queue_blocking_pop_released_by_push(server):
    a, b = server.client(), server.client()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", a.queue_pop("jobs")), daemon=True)
    t.start()
    time.sleep(0.3)
    assert "v" not in out
    b.queue_push("jobs", "job1")
    t.join(10)
    assert out.get("v") == b"job1"


def test_queues_bidirectional(server):
    base = server.client()
    a, b = base.clone(), base.clone()

    def side_a():
        a.queue_push("a", "a1")
        return a.queue_pop("b")

    def side_b():
        got = b.queue_pop("a")
        b.queue_push("b", "b1")
        return got

    ra, rb = run_threads([side_a, side_b])
    assert ra == b"b1"
    assert rb == b"a1"


def test_queue_push_wakes_one_popper_per_item(server):
    poppers = [server.client() for _ in range(3)]
    pusher = server.client()
    got = []
    lock = threading.Lock()

    def pop(c):
        v = c.queue_pop("work")
        with lock:
            got.append(v)

    ts = [threading.Thread(target=pop, args=(c,), daemon=True) for c in poppers]
    for t in ts:
        t.start()
    time.sleep(0.4)
    for i in range(3):
        pusher.queue_push("work", f"item{i}")
    for t in ts:
        t.join(10)
        assert not t.is_alive()
    assert sorted(got) == [b"item0", b"item1", b"item2"]
    assert pusher.queue_len("work") == 0


# ------------------------------------------------------------------ list_keys


def test_list_keys(server):
    c = server.client(world_size=1)  # creates init/, which list_keys hides
    assert c.list_keys() == []
    c.set("a", "1")
    c.add("b", 1)
    c.append("c", "x")
    c.multi_set(["d/e", "f"], ["1", "2"])
    c.queue_push("qq", "v")  # queues excluded
    assert sorted(c.list_keys()) == ["a", "b", "c", "d/e", "f"]
    assert c.num_keys() == 6
    c.delete_key("a")
    assert sorted(c.list_keys()) == ["b", "c", "d/e", "f"]


# ------------------------------------------------------------------ barrier


def test_barrier_world_size_one(store):
    # a barrier that blocked would raise DistStoreError (timeout)
    store.barrier("b1", 1, timedelta(seconds=5))
    store.barrier("b2", 1, timedelta(seconds=5))
    # the barrier key is an ADD counter visible in the KV map
    assert store.get("b1") == b"1"
    store.barrier("b1", 1)
    assert store.get("b1") == b"2"


def test_barrier_releases_all_together(server):
    n = 4
    clients = [server.client() for _ in range(n)]
    last_arrives = threading.Event()
    # per member: was the last member on its way in when the barrier let it go?
    after_last = [None] * n

    def arrive(i):
        def f():
            if i == n - 1:
                time.sleep(0.5)  # the others are all waiting by now
                last_arrives.set()
            clients[i].barrier("rendez", n, timedelta(seconds=10))
            after_last[i] = last_arrives.is_set()
        return f

    run_threads([arrive(i) for i in range(n)])
    assert after_last == [True] * n, "barrier released before the last member arrived"
    assert clients[0].get("rendez") == str(n).encode()
    # counter is never reset: the same key with the same world size passes
    # at once (a barrier that waited would raise DistStoreError)
    clients[0].barrier("rendez", n, timedelta(seconds=5))


def test_barrier_timeout_then_usable(store):
    with pytest.raises(dist.DistStoreError, match="barrier timeout"):
        store.barrier("lonely", 2, timedelta(milliseconds=200))
    store.set("after", "ok")
    assert store.get("after") == b"ok"
    assert store.get("lonely") == b"1"  # the arrival counted and is not undone
    # second arrival completes it now
    store.barrier("lonely", 2, timedelta(seconds=5))
    assert store.get("lonely") == b"2"


def test_barrier_released_by_set(server):
    a, b = server.client(), server.client()
    t = threading.Thread(target=lambda: a.barrier("bs", 5, timedelta(seconds=10)), daemon=True)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()
    b.set("bs", "99")  # generic wake releases barrier waiters
    t.join(10)
    assert not t.is_alive()


# ------------------------------------------------------------------ clone / misc


def test_clone(server):
    a = server.client()
    b = a.clone()
    a.set("key", "value")
    assert b.get("key") == b"value"
    b.set("other", "x")
    assert a.get("other") == b"x"
    assert b.port == a.port and b.host == a.host


def test_multi_worker_fixed_world_size(server):
    # TCPStoreTest.test_multi_worker_with_fixed_world_size, clients sequential
    master = server.client()
    master.set("key", "value")
    for i in range(5):
        c = server.client(world_size=5, timeout=10)
        assert c.get("key") == b"value"
        c.set(f"new_key{i}", f"new_value{i}")
        assert c.compare_set(f"new_key{i}", f"new_value{i}", f"next_value{i}") == f"next_value{i}".encode()
    assert master.num_keys() == 1 + 5 + 1  # key, new_key0..4, init/


def test_large_value_round_trip(store):
    big = bytes(range(256)) * (4 * 1024 * 1024 // 256)  # 4 MiB
    store.set("big", big)
    assert store.get("big") == big
    store.append("big", b"tail")
    assert store.get("big") == big + b"tail"
    assert store.compare_set("big", big + b"tail", b"small") == b"small"
    store.queue_push("bigq", big)
    assert store.queue_pop("bigq") == big
    store.multi_set(["m1", "m2"], [big[:1 << 20], big[1 << 20:]])
    assert b"".join(store.multi_get(["m1", "m2"])) == big


def test_binary_values_and_keys(store):
    allbytes = bytes(range(256))
    store.set("bin", allbytes)
    assert store.get("bin") == allbytes
    # keys are str in the Python API (UTF-8 on the wire): every code point 0..255,
    # including NUL and control characters
    key = "".join(chr(i) for i in range(256))
    store.set(key, allbytes[::-1])
    assert store.get(key) == allbytes[::-1]
    assert store.check([key])
    assert key in store.list_keys()
    store.set("nul\x00inside", "x")
    assert store.get("nul\x00inside") == b"x"
    assert not store.check(["nul"])
    assert store.add("\x00", 2) == 2


def test_str_values_are_utf8(store):
    store.set("u", "héllo ✓")
    assert store.get("u") == "héllo ✓".encode()


def test_many_clients_connected(server):
    # torch's own libuv server stalls ~5 s on about every 24th connect; keep its run short
    n = 64 if TARGET == "ringstore" else 16
    clients = [server.client() for _ in range(n)]
    for i, c in enumerate(clients):
        c.add("ctr", i)
    assert clients[0].get("ctr") == str(sum(range(n))).encode()
    assert clients[-1].num_keys() == 1


def test_store_survives_client_disconnect_while_waiting(server):
    import subprocess
    import sys

    from conftest import HERE, reap, spawn

    # a client process blocks in wait() and is killed; the server must drop it cleanly
    p = spawn([sys.executable, str(HERE / "workers.py"), "wait_forever", server.host, str(server.port)],
              stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "waiting"
    p.kill()
    reap(p)
    c = server.client()
    c.set("never", "now")
    assert c.get("never") == b"now"
    assert c.num_keys() == 1
