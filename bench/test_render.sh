#!/bin/sh
# SPDX-License-Identifier: MIT
# test_render.sh - scripts/bench-compare --render on a made-up run of two
# rounds (ringstore, ringstore-1r and the floor on multi-set; ringstore-1r
# and the floor on fanout), checked against figures worked out by hand: the
# per-round pairing of the floor multiples and of the two-reactors-against-
# one table, and fanout's CPU per wake-up and the time that CPU bounds.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 - "$TMP/results.jsonl" <<'PY'
import json, sys
# (server, round) -> (CPU us per op, p99 us)
runs = {("ringstore", 0): (2.2, 200), ("ringstore", 1): (2.6, 300),
        ("ringstore-1r", 0): (2.0, 100), ("ringstore-1r", 1): (2.0, 100),
        ("floor", 0): (1.0, 50), ("floor", 1): (1.0, 50)}
with open(sys.argv[1], "w") as fh:
    for (s, rep), (cpu, p99) in runs.items():
        fh.write(json.dumps({
            "workload": "multi-set", "server_name": s, "repeat": rep,
            "repeat_of": 2, "server": {"cpu_s_per_mop": cpu,
                                       "cpu_share": 0.9},
            "lat_us": {"p99": p99}, "ops_per_s": 1000, "errors": 0,
            "head": "abc1234", "started": "2026-12-02T03:48:00+00:00",
            "elapsed": 10, "loadavg1": 1.0, "bench_cmd": "--repeat 2"}) + "\n")
    # fanout, 16,384 waiters on 2 CPUs: (server, round) -> (last wake ms,
    # server CPU s, bench CPU s); the median run is the faster of two.
    fan = {("ringstore-1r", 0): (80.0, 0.1, 0.04),
           ("ringstore-1r", 1): (60.0, 0.08192, 0.03277),
           ("floor", 0): (100.0, 0.1024, 0.03277),
           ("floor", 1): (110.0, 0.2, 0.05)}
    for (s, rep), (ms, scpu, ccpu) in fan.items():
        fh.write(json.dumps({
            "workload": "fanout", "server_name": s, "repeat": rep,
            "repeat_of": 2, "done": 16384, "cpus": 2,
            "fanout_last_wake_ms": ms, "lat_us": {"p50": ms * 500},
            "server": {"cpu_s": scpu}, "client": {"cpu_s": ccpu},
            "errors": 0, "head": "abc1234",
            "started": "2026-12-02T03:48:00+00:00", "elapsed": 10,
            "loadavg1": 1.0, "bench_cmd": "--repeat 2"}) + "\n")
PY
"$ROOT/scripts/bench-compare" --render "$TMP/results.jsonl" >"$TMP/out"
fail=0
# The floor multiples: 2.2/1.0 and 2.6/1.0 -> 2.40x; 2.0/1.0 -> 2.00x.
grep -qxF '| multi-set | 1.00 | 2.40x | 2.00x |' "$TMP/out" || fail=1
# Two reactors against one: 2.2/2.0, 2.6/2.0 -> 1.20x; p99 2.0, 3.0 -> 2.50x.
grep -qxF '| multi-set | 1.20x | 1.10, 1.30 | 2.50x |' "$TMP/out" || fail=1
# fanout, from each server's faster run: 60 ms against 100 -> 0.60x;
# 0.08192 s / 16,384 = 5.00 us, 0.03277 s -> 2.00 us, 0.1024 s -> 6.25 us;
# (0.08192 + 0.03277) / 2 CPUs = 57.3 ms, (0.1024 + 0.03277) / 2 = 67.6 ms.
grep -qxF '| fanout | SET -> last wake, multiple of the floor | - | 0.60x | - |' "$TMP/out" || fail=1
grep -qxF '| fanout | server CPU per wake-up (us) | - | 5.00 | 6.25 |' "$TMP/out" || fail=1
grep -qxF '| fanout | bench CPU per wake-up (us) | - | 2.00 | 2.00 |' "$TMP/out" || fail=1
grep -qxF '| fanout | (server + bench CPU) / CPUs (ms) | - | 57.3 | 67.6 |' "$TMP/out" || fail=1
if [ $fail -ne 0 ]; then
	cat "$TMP/out"
	exit 1
fi
echo "render: ok"
