# SPDX-License-Identifier: MIT
"""The write log (--data-dir) against what it promises, with the real binary,
SIGKILL and real PyTorch clients (server/wal.h):

  * --fsync always: after a SIGKILL at a random moment under a multi-client
    write load, and a restart, every acknowledged write is there: the ADD
    counter is at least the acknowledged ADDs and at most those sent, and
    each writer's key holds its last acknowledged value or a later one;
  * the newest log cut at every byte offset of its last record restarts,
    with every record before the cut (and says where it cut); a damaged
    record before the end refuses to start, naming --repair-log, which then
    keeps the good prefix and moves the rest aside;
  * compaction under that load, and a SIGKILL at each step of a compaction
    (RINGSTORE_COMPACT_PAUSE holds it there), lose nothing acknowledged.

The backend and reactor count come from the pass (RS_IO, RS_THREADS).
"""
from __future__ import annotations

import datetime
import os
import random
import re
import shutil
import signal
import struct
import threading
import time
from pathlib import Path

import pytest

from conftest import (OP, RawConn, kill_group, req, s, start_ringstore_args,
                      unregister_proc)

pytestmark = pytest.mark.ringstore_only

THREADS = os.environ.get("RS_THREADS", "1")
WRITERS = 8


class Durable:
    """One data directory and the ringstore processes that serve it in turn."""

    def __init__(self, tmp_path: Path, *flags: str):
        self.tmp = tmp_path
        self.dir = tmp_path / "data"
        self.flags = [str(f) for f in flags]
        self.proc = None
        self.port = None
        self.err = None
        self.starts = 0

    def start(self, *extra: str, env: dict | None = None, expect_fail=False):
        self.starts += 1
        kw = {"env": {**os.environ, **env}} if env else {}
        p, port, err = start_ringstore_args(
            ["--port", "0", "--bind", "127.0.0.1", "--threads", THREADS,
             "--data-dir", str(self.dir), *self.flags, *extra],
            self.tmp, name=f"ringstore-{self.starts}", **kw)
        self.err = err
        if expect_fail:
            assert port is None, f"ringstore started: {err.read_text()}"
            p.wait(timeout=30)
            unregister_proc(p)
            return p.returncode, err.read_text()
        assert port is not None, f"ringstore did not start:\n{err.read_text()}"
        self.proc, self.port = p, port
        return port

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def kill(self):
        """SIGKILL, as a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        unregister_proc(self.proc)
        self.proc = None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0, self.log()
        unregister_proc(self.proc)
        self.proc = None

    def raw(self) -> RawConn:
        c = RawConn("127.0.0.1", self.port, timeout=10)
        c.handshake()
        return c


def get(c: RawConn, key: str) -> bytes:
    c.send(req("GET", s("/" + key)))  # TCPStore puts "/" before user keys
    return c.recv_bytes()


# ---- a write load of real clients ------------------------------------------------

class Writer(threading.Thread):
    """A torch client that ADDs 1 to 'counter' and SETs its own key to a rising
    number, counting what it sent and what was acknowledged, until its
    connection fails. SET has no reply (docs/protocol.md): a SET is acknowledged by
    the reply to the request after it on the same connection, which vouches
    for every write the client made before it."""

    def __init__(self, port: int, wid: int, base: int):
        super().__init__(daemon=True)
        self.port, self.wid, self.base = port, wid, base
        self.sent_adds = self.acked_adds = 0
        self.sent_val = self.acked_val = None
        self.error = None
        self.ready = threading.Event()

    def run(self):
        import torch.distributed as dist

        try:
            st = dist.TCPStore("127.0.0.1", self.port, is_master=False,
                               timeout=datetime.timedelta(seconds=30))
        except Exception as e:  # noqa: BLE001
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        i = self.base
        try:
            while True:
                i += 1
                self.sent_adds += 1
                st.add("counter", 1)
                self.acked_adds += 1
                self.acked_val = self.sent_val  # the SET before this ADD
                self.sent_val = i
                st.set(f"w{self.wid}", str(i))
        except Exception as e:  # noqa: BLE001 - the server was killed
            self.error = e


def load(port: int, base: int) -> list[Writer]:
    ws = [Writer(port, i, base) for i in range(WRITERS)]
    for w in ws:
        w.start()
    for w in ws:
        assert w.ready.wait(60)
        assert w.error is None, w.error
    return ws


def check_acked(d: Durable, rounds: list[list[Writer]]):
    """Every acknowledged write of every round so far is in the store."""
    with d.raw() as c:
        counter = int(get(c, "counter") or b"0")
        acked = sum(w.acked_adds for ws in rounds for w in ws)
        sent = sum(w.sent_adds for ws in rounds for w in ws)
        assert acked <= counter <= sent, (acked, counter, sent)
        last = rounds[-1]
        for w in last:
            if w.acked_val is None:
                continue
            v = int(get(c, f"w{w.wid}"))
            assert w.acked_val <= v <= w.sent_val, (w.wid, w.acked_val, v, w.sent_val)
    return counter


@pytest.mark.timeout_s(240)
def test_sigkill_under_load_keeps_every_acknowledged_write(tmp_path):
    d = Durable(tmp_path, "--fsync", "always")
    port = d.start()
    rounds = []
    rng = random.Random(os.getpid())
    for r in range(4):
        ws = load(port, base=(r + 1) * 10**9)
        time.sleep(rng.uniform(0.2, 1.2))  # a random moment
        d.kill()
        for w in ws:
            w.join(30)
        assert all(w.error is not None for w in ws)
        assert sum(w.acked_adds for w in ws) > 0
        rounds.append(ws)
        port = d.start()
        assert re.search(r"write log: replayed \d+ records", d.log()), d.log()
        check_acked(d, rounds)
    d.stop()


# ---- torn tails and damage ------------------------------------------------------

HDR = 16


def records(path: Path) -> list[tuple[int, int]]:
    """(offset, span) of every record of a log (walfile.h's layout)."""
    data = path.read_bytes()
    out, off = [], 64
    while off + HDR <= len(data):
        n, _sum, _lsn = struct.unpack_from("<IIQ", data, off)
        span = (HDR + n + 15) & ~15
        if off + span > len(data):
            break
        out.append((off, span))
        off += span
    return out


def newest_log(data: Path) -> Path:
    man = (data / "MANIFEST").read_text().split("\n")
    num = [int(line.split()[1]) for line in man if line.startswith("log ")][-1]
    return data / f"log-{num:06d}.rs"


def state(d: Durable) -> dict:
    with d.raw() as c:
        out = {"counter": get(c, "counter")}
        for i in range(WRITERS):
            out[f"w{i}"] = get(c, f"w{i}")
        c.send(req("GETNUMKEYS"))
        out["keys"] = c.recv_i64()
    return out


@pytest.mark.timeout_s(240)
def test_torn_tail_at_every_offset(tmp_path):
    d = Durable(tmp_path, "--fsync", "always")
    port = d.start()
    ws = load(port, base=0)
    time.sleep(0.5)
    d.kill()
    for w in ws:
        w.join(30)
    log = newest_log(d.dir)
    recs = records(log)
    assert len(recs) > 10
    last_off, last_span = recs[-1]
    assert last_off + last_span == log.stat().st_size  # a whole record last
    base = tmp_path / "base"
    shutil.copytree(d.dir, base)

    def restart_cut_at(cut: int):
        shutil.rmtree(d.dir)
        shutil.copytree(base, d.dir)
        with open(newest_log(d.dir), "r+b") as f:
            f.truncate(cut)
        d.start()
        st = state(d)
        text = d.log()
        d.stop()
        return st, text

    before, text = restart_cut_at(last_off)
    assert "cut there" not in text
    whole, _ = restart_cut_at(last_off + last_span)
    assert before != whole  # the last record changed something
    for cut in range(last_off + 1, last_off + last_span):
        st, text = restart_cut_at(cut)
        assert st == before, cut
        assert re.search(rf"{re.escape(log.name)}: .* at offset {last_off} is the end of a "
                         r"write a crash interrupted: cut there", text), text
        assert newest_log(d.dir).stat().st_size == last_off


@pytest.mark.timeout_s(120)
def test_damaged_record_refuses_then_repairs(tmp_path):
    d = Durable(tmp_path, "--fsync", "always")
    d.start()
    with d.raw() as c:
        for i in range(40):
            c.send(req("SET", s(f"/k{i}"), s(f"v{i}")))
        c.send(req("GET", s("/k0")))
        assert c.recv_bytes() == b"v0"
    d.stop()
    log = newest_log(d.dir)
    recs = records(log)
    off, _ = recs[20]
    data = bytearray(log.read_bytes())
    data[off + HDR + 4] ^= 0x55
    log.write_bytes(bytes(data))

    rc, text = d.start(expect_fail=True)
    assert rc == 65  # EX_DATAERR: a supervisor does not restart into it
    assert "--repair-log" in text and str(log) in text and f"offset {off}" in text, text

    d.start("--repair-log")
    with d.raw() as c:
        assert get(c, "k19") == b"v19"
        assert get(c, "k20") == b""  # the damaged one, and all after it
        assert get(c, "k39") == b""
    assert "--repair-log" in d.log()
    d.stop()
    assert (d.dir / f"{log.name}.damaged-{off}").exists()
    d.start()  # repaired for good
    d.stop()


# ---- compaction -------------------------------------------------------------------

@pytest.mark.timeout_s(240)
def test_compaction_under_load_and_sigkill(tmp_path):
    """Writers overwrite a few keys, so the log outgrows the live data and
    compactions follow one another; SIGKILLs at random moments lose nothing
    acknowledged, and the data directory stays small."""
    d = Durable(tmp_path, "--fsync", "always", "--compact-min-bytes", "32K")
    port = d.start()
    rounds = []
    rng = random.Random(os.getpid() + 1)
    compactions = 0
    for r in range(3):
        ws = load(port, base=(r + 1) * 10**9)
        time.sleep(rng.uniform(0.8, 1.6))
        compactions += len(re.findall(r"write log: compacted", d.log()))
        d.kill()
        for w in ws:
            w.join(30)
        rounds.append(ws)
        port = d.start()
        check_acked(d, rounds)
    assert compactions > 0
    d.stop()
    size = sum(f.stat().st_size for f in d.dir.iterdir())
    assert size < 8 << 20, sorted((f.name, f.stat().st_size) for f in d.dir.iterdir())


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("step", ["rotated", "snapshot-written", "switched"])
def test_sigkill_at_each_compaction_step(tmp_path, step):
    d = Durable(tmp_path, "--fsync", "always", "--compact-min-bytes", "32K")
    port = d.start(env={"RINGSTORE_COMPACT_PAUSE": step})
    ws = load(port, base=0)
    deadline = time.monotonic() + 60
    while f"compaction paused after '{step}'" not in d.log():
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    time.sleep(0.2)  # more writes into the new log meanwhile
    d.kill()
    for w in ws:
        w.join(30)
    d.start()
    check_acked(d, [ws])
    d.stop()
    d.start()  # and once more, after whatever the first restart cleaned up
    check_acked(d, [ws])
    d.stop()


# ---- a quiet log costs nothing ------------------------------------------------------

def thread_cpu_ticks(pid: int, name: str) -> int:
    """utime + stime (clock ticks) of the server's thread called @name."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
    raise AssertionError(f"no thread {name} in {pid}")


@pytest.mark.timeout_s(60)
def test_log_thread_sleeps_between_writes(tmp_path):
    """With a trickle of writes, and once they stop, the log's thread sleeps
    between its rounds: over two seconds of each it uses next to no CPU (a
    thread that spins, as one whose timed waits expired at once did, uses a
    large share of a CPU)."""
    d = Durable(tmp_path)
    d.start()
    hz = os.sysconf("SC_CLK_TCK")
    with d.raw() as c:
        before = thread_cpu_ticks(d.proc.pid, "rs-wal")
        for i in range(20):  # ten a second
            c.send(req("SET", s(f"/k{i}"), s("v")))
            time.sleep(0.1)
        c.send(req("GET", s("/k19")))
        assert c.recv_bytes() == b"v"
        used = thread_cpu_ticks(d.proc.pid, "rs-wal") - before
        assert used <= hz // 10, f"rs-wal used {used / hz:.2f} s of CPU in 2 s of a trickle"
    time.sleep(1.5)  # it keeps its rhythm for a second after the last write
    before = thread_cpu_ticks(d.proc.pid, "rs-wal")
    time.sleep(2.0)
    used = thread_cpu_ticks(d.proc.pid, "rs-wal") - before
    assert used <= hz // 20, f"rs-wal used {used / hz:.2f} s of CPU in 2 s of idleness"
    d.stop()


# ---- the log's metrics and the compaction an operator asks for -------------------

def metrics(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(ringstore_log_\w+) (\S+)$", text, re.M)}


def post(port: int, path: str):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}{path}", method="POST"), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.timeout_s(120)
def test_log_metrics_and_compaction_on_request(tmp_path):
    """/metrics counts the log's records, bytes, writes and syncs; POST
    /handler/compact starts a compaction, which the counter and the data
    directory (a snapshot) show, and the state survives a SIGKILL after it."""
    d = Durable(tmp_path, "--fsync", "always", "--control-port", "0")
    port = d.start()
    ctl = int(re.search(r"ringstore control on \S+:(\d+)",
                        (tmp_path / f"ringstore-{d.starts}.out").read_text()).group(1))
    m0 = metrics(ctl)
    assert m0["ringstore_log_records_total"] == 0
    import torch.distributed as dist

    st = dist.TCPStore("127.0.0.1", port, is_master=False,
                       timeout=datetime.timedelta(seconds=30))
    for i in range(200):
        st.set("k", str(i))       # 200 records of one key: 199 are dead weight
    assert st.add("n", 5) == 5    # a reply: everything before it is synced
    m1 = metrics(ctl)
    assert m1["ringstore_log_records_total"] == 201
    assert m1["ringstore_log_syncs_total"] >= 1
    assert m1["ringstore_log_written_bytes_total"] > 201 * 16
    assert m1["ringstore_log_writes_total"] >= m1["ringstore_log_syncs_total"]
    status, body = post(ctl, "/handler/compact")
    assert status == 202, body
    deadline = time.monotonic() + 60
    while metrics(ctl)["ringstore_log_compactions_total"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert list(d.dir.glob("snap-*.rs")), sorted(p.name for p in d.dir.iterdir())
    assert metrics(ctl)["ringstore_log_bytes"] < m1["ringstore_log_written_bytes_total"]
    d.kill()
    d.start()
    with d.raw() as c:
        assert get(c, "k") == b"199" and get(c, "n") == b"5"
    d.stop()


def test_compact_without_a_log_says_so(tmp_path):
    p, _, _ = start_ringstore_args(["--port", "0", "--bind", "127.0.0.1",
                                    "--control-port", "0"], tmp_path)
    ctl = int(re.search(r"ringstore control on \S+:(\d+)",
                        (tmp_path / "ringstore.out").read_text()).group(1))
    status, body = post(ctl, "/handler/compact")
    assert status == 409 and "without --data-dir" in body, (status, body)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    unregister_proc(p)
