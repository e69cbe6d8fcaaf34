"""The MULTI_GET reply cache (server/store.h) seen by real PyTorch clients.

A byte-identical MULTI_GET of 64 keys or more is answered from a per-reactor
cache while nothing has been written anywhere. These tests write between and
during repeated identical MULTI_GETs, from other connections (so, with several
reactors, from other reactors), and check that no reader ever sees a value
older than one whose write was already acknowledged, and that every reader
sees the last value once the writer is done.
"""
import threading

import pytest


def report(msg: str) -> None:
    """A figures line (shown with pytest -s, and in the captured output on failure)."""
    print(f"\n[mget-cache] {msg}", flush=True)

NKEYS = 200
KEYS = [f"nccl/uid/{i:04d}" for i in range(NKEYS)]


def value(i: int, gen: int) -> bytes:
    return f"{i:04d}:{gen:08d}:".encode().ljust(128, b"x")


@pytest.mark.parametrize("threads, flags", [(1, ()), (2, ()), (4, ()),
                                            (2, ("--mget-cache", "off"))])
def test_every_acknowledged_write_is_seen(server_factory, threads, flags):
    """With the cache, and without it (--mget-cache off: the same answers)."""
    srv = server_factory(*flags, threads=threads)
    writer, reader = srv.client(), srv.client()
    vals = [value(i, 0) for i in range(NKEYS)]
    writer.multi_set(KEYS, vals)
    writer.get(KEYS[0])  # the MULTI_SET (no reply) is done once this answers
    hits = 0
    for gen in range(1, 151):
        # Twice with no write in between: the second may come from the cache.
        assert reader.multi_get(KEYS) == vals
        assert reader.multi_get(KEYS) == vals
        hits += 1
        i = (gen * 37) % NKEYS
        vals[i] = value(i, gen)
        if gen % 3 == 0:
            writer.set(KEYS[i], vals[i])
        elif gen % 3 == 1:
            writer.compare_set(KEYS[i], writer.get(KEYS[i]), vals[i])
        else:
            # A write to a key outside the list must not hide the next one.
            writer.add("elsewhere", 1)
            writer.set(KEYS[i], vals[i])
        writer.get(KEYS[i])  # acknowledged
        assert reader.multi_get(KEYS) == vals
    # A deletion is a write too (torch's multi_get waits for every key, so
    # the key comes back with a new value before the next read).
    assert reader.multi_get(KEYS) == vals
    assert writer.delete_key(KEYS[7])
    assert writer.check(KEYS[:7]) and not writer.check([KEYS[7]])
    vals[7] = value(7, 999)
    writer.set(KEYS[7], vals[7])
    writer.get(KEYS[7])
    assert reader.multi_get(KEYS) == vals
    report(f"{threads} reactor(s) {' '.join(flags)}: 150 writes, each seen by the next identical "
           f"200-key MULTI_GET ({hits} repeated requests in between)")


@pytest.mark.parametrize("threads", [2, 4])
def test_concurrent_writer_readers_monotonic(server_factory, threads):
    srv = server_factory(threads=threads)
    setup = srv.client()
    setup.multi_set(KEYS, [value(i, 0) for i in range(NKEYS)])
    setup.get(KEYS[0])
    hot = 50
    rounds = 400
    stop = threading.Event()
    errors: list[str] = []
    seen_counts = []

    def reader(n):
        st = srv.client()
        last = 0
        count = 0
        try:
            while not stop.is_set():
                got = st.multi_get(KEYS)
                gen = int(got[hot].split(b":")[1])
                if gen < last:
                    errors.append(f"reader {n}: saw {gen} after {last}")
                    return
                for i, v in enumerate(got):
                    if i != hot and v != value(i, 0):
                        errors.append(f"reader {n}: key {i} = {v[:20]!r}")
                        return
                last = gen
                count += 1
            # After the writer's last acknowledged write: the last value.
            gen = int(st.multi_get(KEYS)[hot].split(b":")[1])
            if gen != rounds:
                errors.append(f"reader {n}: final {gen}, want {rounds}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"reader {n}: {e!r}")
        seen_counts.append(count)

    ts = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for t in ts:
        t.start()
    w = srv.client()
    for gen in range(1, rounds + 1):
        w.set(KEYS[hot], value(hot, gen))
        w.get(KEYS[hot])  # acknowledged before the next one starts
    stop.set()
    for t in ts:
        t.join(60)
    assert not errors, errors[:5]
    assert len(seen_counts) == 3
    report(f"{threads} reactors: {rounds} writes of one key while 3 readers did "
           f"{sum(seen_counts)} 200-key MULTI_GETs; never older, final value seen")
