"""Protocol violations on raw sockets (ringstore only; PROTOCOL §5.0, §5.4, §7).

For each violation: the offending connection is closed without a reply (and for an
oversized length field, without waiting for the payload); the stderr log has
`closing <peer>: <sentence> (<reason_id>)`; a healthy torch client connected before
the bad one, including one blocked in wait(), keeps working with its data intact;
and the stats line printed on SIGTERM counts the reason.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from conftest import VALIDATE, i64, req, s, u8, u32, u64

pytestmark = pytest.mark.ringstore_only

LIMIT_FLAGS = ("--max-key-bytes", "64", "--max-value-bytes", "1024", "--max-keys-per-request", "8")

K = s(b"/k")

# (case id, reason_id, handshake first?, bytes to send)
CASES = [
    ("wrong_magic", "bad_magic", False, u8(0) + u32(0xDEADBEEF)),
    ("wrong_magic_then_more", "bad_magic", False, u8(0) + u32(0x3C85F7CF) + req("PING", u32(1))),
    ("first_is_set", "not_validated", False, req("SET", K, s(b"v"))),
    ("first_is_ping", "not_validated", False, req("PING", u32(1))),
    ("first_is_garbage", "not_validated", False, b"GET / HTTP/1.1\r\n\r\n"),
    ("opcode_19", "unknown_op", True, u8(19)),
    ("opcode_255", "unknown_op", True, u8(255) + b"\x00" * 16),
    ("second_validate", "unknown_op", True, VALIDATE),
    # oversized length fields: header only, payload never sent
    ("set_key_65", "key_too_long", True, u8(1) + u64(65)),
    ("get_key_huge", "key_too_long", True, u8(3) + u64(1 << 62)),
    ("check_key_65", "key_too_long", True, u8(5) + u64(1) + u64(65)),
    ("set_value_1025", "value_too_long", True, u8(1) + K + u64(1025)),
    ("append_value_huge", "value_too_long", True, u8(9) + K + u64(1 << 40)),
    ("compare_set_desired_1025", "value_too_long", True, u8(2) + K + s(b"") + u64(1025)),
    ("queue_push_value_1025", "value_too_long", True, u8(14) + K + u64(1025)),
    ("multi_set_value_1025", "value_too_long", True, u8(11) + i64(1) + K + u64(1025)),
    ("check_9_keys", "too_many_keys", True, u8(5) + u64(9)),
    ("wait_9_keys", "too_many_keys", True, u8(6) + u64(9)),
    ("multi_get_huge_count", "too_many_keys", True, u8(10) + u64(1 << 50)),
    ("multi_set_9", "too_many_keys", True, u8(11) + i64(9)),
    ("multi_set_negative", "too_many_keys", True, u8(11) + i64(-1)),
    ("add_non_numeric", "bad_number", True, req("SET", K, s(b"abc")) + req("ADD", K, i64(1))),
    ("add_empty_value", "bad_number", True, req("SET", K, s(b"")) + req("ADD", K, i64(1))),
    ("barrier_non_numeric", "bad_number", True, req("SET", K, s(b"x1")) + req("BARRIER", K, i64(2))),
]


@pytest.mark.parametrize("case,reason,handshake,payload", CASES, ids=[c[0] for c in CASES])
def test_bad_input_closes_only_that_connection(server_factory, case, reason, handshake, payload):
    srv = server_factory(*LIMIT_FLAGS)
    healthy = srv.client(world_size=1)
    healthy.set("data", b"\x00intact\xff")
    healthy.add("ctr", 7)
    healthy.queue_push("q", "item")
    waiter = srv.client()
    released = threading.Event()

    def wait():
        waiter.wait(["release"], timedelta(seconds=20))
        released.set()

    t = threading.Thread(target=wait, daemon=True)
    t.start()
    time.sleep(0.1)
    keys_before = healthy.num_keys()

    bad = srv.raw(validate=handshake)
    bad.send(payload)
    bad.expect_eof(timeout=5)  # the server closes it; the client never does
    bad.close()

    srv.wait_log(rf"closing \S+: .+ \({reason}\)\s*$")

    # the healthy clients are untouched
    assert healthy.get("data") == b"\x00intact\xff"
    assert healthy.add("ctr", 1) == 8
    assert healthy.queue_len("q") == 1
    expected_keys = keys_before + (1 if case.startswith(("add_", "barrier_")) else 0)
    assert healthy.num_keys() == expected_keys
    healthy.set("release", "go")
    t.join(10)
    assert released.is_set(), "waiter connected before the bad client was not released"
    if case.startswith(("add_", "barrier_")):
        # the value that could not be parsed is left as it was
        assert healthy.get("k") in (b"abc", b"", b"x1")
    # a new client works too
    fresh = srv.client()
    assert fresh.get("data") == b"\x00intact\xff"

    stats = srv.stats()
    assert stats.get(reason) == 1, f"stats line lacks {reason}=1: {stats}"
    others = {r for _, r, _, _ in CASES} - {reason}
    for r in others:
        assert stats.get(r, 0) == 0, f"{r} counted for case {case}: {stats}"


def test_limits_are_inclusive(server_factory):
    srv = server_factory(*LIMIT_FLAGS)
    st = srv.client()
    key63 = "k" * 63  # '/' + 63 = 64 bytes on the wire
    st.set(key63, b"v" * 1024)
    assert st.get(key63) == b"v" * 1024
    keys = [f"m{i}" for i in range(8)]
    st.multi_set(keys, ["x"] * 8)
    assert st.multi_get(keys) == [b"x"] * 8
    assert st.check(keys)
    st.wait(keys)
    st.append(key63, b"")  # still 1024
    assert st.compare_set(key63, b"v" * 1024, b"w" * 1024) == b"w" * 1024
    st.queue_push("qq", b"z" * 1024)
    assert st.queue_pop("qq") == b"z" * 1024
    stats = srv.stats()
    assert all(stats.get(r, 0) == 0 for r in ("key_too_long", "value_too_long", "too_many_keys"))


def test_torch_client_over_key_limit_is_disconnected(server_factory):
    import torch.distributed as dist

    srv = server_factory(*LIMIT_FLAGS)
    healthy = srv.client()
    healthy.set("a", "1")
    victim = srv.client()
    victim.set("k" * 64, "v")  # 65 bytes on the wire; SET has no reply
    with pytest.raises((dist.DistNetworkError, RuntimeError)):
        victim.num_keys()
    srv.wait_log(r"closing \S+: .+ \(key_too_long\)")
    assert healthy.get("a") == b"1"
    assert healthy.num_keys() == 1
    assert srv.stats().get("key_too_long") == 1


def test_request_too_long(server_factory):
    # a MULTI_SET whose pairs are each within limits but whose total exceeds --max-request-bytes
    srv = server_factory("--max-key-bytes", "64", "--max-value-bytes", "1024",
                         "--max-keys-per-request", "8", "--max-request-bytes", "2048")
    healthy = srv.client()
    healthy.set("a", "1")
    bad = srv.raw()
    payload = req("MULTI_SET", i64(4), *[s(f"/m{i}".encode()) + s(b"v" * 1000) for i in range(4)])
    try:
        bad.send(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
    bad.expect_eof()
    srv.wait_log(r"closing \S+: .+ \(request_too_long\)")
    assert not healthy.check(["m0"]) or healthy.get("m0") == b"v" * 1000
    assert healthy.get("a") == b"1"
    assert srv.stats().get("request_too_long") == 1


def test_stats_count_several_errors(server_factory):
    srv = server_factory(*LIMIT_FLAGS)
    for _ in range(3):
        c = srv.raw(validate=False)
        c.send(u8(0) + u32(1))
        c.expect_eof()
        c.close()
    for _ in range(2):
        c = srv.raw()
        c.send(u8(77))
        c.expect_eof()
        c.close()
    st = srv.client()
    st.set("still", "ok")
    assert st.get("still") == b"ok"
    stats = srv.stats()
    assert stats.get("bad_magic") == 3 and stats.get("unknown_op") == 2, stats


def test_log_format(server_factory):
    import re

    srv = server_factory()
    c = srv.raw(validate=False)
    c.send(u8(0) + u32(0))
    c.expect_eof()
    srv.wait_log(r"\(bad_magic\)")
    srv.stop()
    lines = [l for l in srv.log().splitlines() if l.strip()]
    rx = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)? [A-Z]+ \S")
    bad = [l for l in lines if not rx.match(l)]
    assert not bad, f"log lines not '<ISO-8601> <LEVEL> <message>': {bad[:5]}"
    assert "proto_errors" in lines[-1]
