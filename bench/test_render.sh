#!/bin/sh
# SPDX-License-Identifier: MIT
# test_render.sh - scripts/bench-compare --render on a made-up run of two
# rounds (ringstore, ringstore-1r and the floor on multi-set), checked
# against ratios worked out by hand: the per-round pairing of the floor
# multiples and of the two-reactors-against-one table.
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
PY
"$ROOT/scripts/bench-compare" --render "$TMP/results.jsonl" >"$TMP/out"
fail=0
# The floor multiples: 2.2/1.0 and 2.6/1.0 -> 2.40x; 2.0/1.0 -> 2.00x.
grep -qxF '| multi-set | 1.00 | 2.40x | 2.00x |' "$TMP/out" || fail=1
# Two reactors against one: 2.2/2.0, 2.6/2.0 -> 1.20x; p99 2.0, 3.0 -> 2.50x.
grep -qxF '| multi-set | 1.20x | 1.10, 1.30 | 2.50x |' "$TMP/out" || fail=1
if [ $fail -ne 0 ]; then
	cat "$TMP/out"
	exit 1
fi
echo "render: ok"
