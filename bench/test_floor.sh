#!/bin/sh
# SPDX-License-Identifier: MIT
# test_floor.sh FLOOR BENCH RINGSTORE IO - the floor server against the
# bench's own checks, on one I/O mechanism (uring or epoll):
#  1. every workload the floor serves runs a fixed number of operations
#     against it with no error (the bench checks every reply's shape, PING
#     nonces, CHECK and WAIT bytes);
#     and the MULTI_* ones again with --table-keys;
#  2. nccl-init receives exactly as many bytes from the floor as from
#     ringstore: the canned replies have ringstore's sizes;
#  3. uring only: the same with --send-zc 1 (every write a SEND_ZC, its
#     buffers held until the notification), and ops-mix with it;
#  4. against a port where nothing listens, and against a server that
#     closes its connections while the workload is prepared, the bench
#     exits 1 at once, saying so.
# Exit 77 (skip) if the floor cannot start (io_uring not permitted).
set -u
FLOOR=$1 BENCH=$2 RINGSTORE=$3 IO=$4
TMP=$(mktemp -d)
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$TMP"
}
trap cleanup EXIT

# start NAME CMD...: run a server, wait for its "listening on" line.
start() {
	name=$1
	shift
	"$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	pid=$!
	PIDS="$PIDS $pid"
	i=0
	while ! grep -q "listening on" "$TMP/$name.out" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
			cat "$TMP/$name.err" >&2
			return 1
		fi
		sleep 0.05
	done
	port=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$TMP/$name.out")
	eval "${name}_port=$port ${name}_pid=$pid"
}

# field JSON NAME: a top-level integer field of the bench's JSON line.
field() {
	printf '%s\n' "$1" | sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p"
}

# bench PORT ARGS...: one run; fails the test on errors or no operations.
bench() {
	port=$1
	shift
	out=$("$BENCH" --addr 127.0.0.1:"$port" --json --no-progress "$@")
	rc=$?
	errors=$(field "$out" errors)
	ops=$(field "$out" ops)
	if [ $rc -ne 0 ] || [ "${errors:-1}" != 0 ] || [ "${ops:-0}" = 0 ]; then
		echo "FAIL: bench $* (rc $rc): $out" >&2
		exit 1
	fi
	LAST=$out
}

# bench_fails NEEDLE PORT ARGS...: one run that must exit 1 at once with
# NEEDLE in its error output; fails the test otherwise.
bench_fails() {
	needle=$1 port=$2
	shift 2
	"$BENCH" --addr 127.0.0.1:"$port" --no-progress "$@" \
		>"$TMP/fail.out" 2>"$TMP/fail.err"
	rc=$?
	if [ $rc -ne 1 ] || ! grep -q "$needle" "$TMP/fail.err"; then
		echo "FAIL: bench $* on port $port: rc $rc (want 1)," \
			"stderr: $(cat "$TMP/fail.err")" >&2
		exit 1
	fi
}

start floor64 "$FLOOR" --port 0 --io "$IO" --value-bytes 64 || {
	echo "floor --io $IO cannot start: skipped" >&2
	exit 77
}
for w in multi-get multi-get-hot multi-get-wide multi-set multi-mix ops-mix; do
	bench "$floor64_port" --workload $w --conns 16 --keyspace 256 \
		--ops 3000 --duration 60
	echo "ok $IO $w"
done
bench "$floor64_port" --workload heartbeat --conns 64 --total-rate 2000 \
	--duration 0.5
echo "ok $IO heartbeat"

# --table-keys: the same replies, with a table's lines touched before each
# MULTI_GET and MULTI_SET (100-byte values: a write longer than an entry's
# room for a value is cut to it).
start tk "$FLOOR" --port 0 --io "$IO" --value-bytes 100 --table-keys 1000 ||
	exit 1
for w in multi-get multi-set multi-mix; do
	bench "$tk_port" --workload $w --conns 16 --keyspace 256 \
		--value-bytes 100 --ops 3000 --duration 60
done
echo "ok $IO --table-keys"

start floor128 "$FLOOR" --port 0 --io "$IO" --value-bytes 128 || exit 1
start rs "$RINGSTORE" --port 0 --bind 127.0.0.1 --threads 1 \
	--log-level warn || exit 1
bench "$floor128_port" --workload nccl-init --conns 20 --keys 300 --rounds 2
floor_rx=$(field "$LAST" rx_bytes)
bench "$rs_port" --workload nccl-init --conns 20 --keys 300 --rounds 2
rs_rx=$(field "$LAST" rx_bytes)
if [ "$floor_rx" != "$rs_rx" ] || [ "$rs_rx" -lt $((20 * 2 * 300 * 136)) ]; then
	echo "FAIL: nccl-init received $floor_rx bytes from the floor," \
		"$rs_rx from ringstore" >&2
	exit 1
fi
echo "ok $IO nccl-init: $rs_rx bytes from each"

if [ "$IO" = uring ]; then
	start zc "$FLOOR" --port 0 --io uring --value-bytes 128 \
		--send-zc 1 || exit 1
	bench "$zc_port" --workload nccl-init --conns 20 --keys 300 --rounds 2
	zc_rx=$(field "$LAST" rx_bytes)
	if [ "$zc_rx" != "$rs_rx" ]; then
		echo "FAIL: nccl-init received $zc_rx bytes from the" \
			"--send-zc floor, $rs_rx from ringstore" >&2
		exit 1
	fi
	bench "$zc_port" --workload ops-mix --conns 16 --keyspace 256 \
		--ops 3000 --duration 60
	echo "ok uring --send-zc: nccl-init $zc_rx bytes, ops-mix"
fi

# A port where nothing listens (an epoll floor's, after it exited: an
# io_uring process's listener outlives it while the kernel tears its ring
# down, and takes connections): the bench stops at once with a message
# that says so, instead of retrying each of its connections.
start gone "$FLOOR" --port 0 --io epoll --value-bytes 64 || exit 1
kill "$gone_pid" && wait "$gone_pid" 2>/dev/null
bench_fails "nothing listens there" "$gone_port" --workload ops-mix --conns 16
echo "ok $IO: a closed port is a clear error"

# A server that closes the connection writing the key space (keys over its
# limit): the bench stops, saying so, instead of waiting for a prepare
# phase that cannot end.
start strict "$RINGSTORE" --port 0 --bind 127.0.0.1 --threads 1 --io "$IO" \
	--max-key-bytes 8 --log-level error || exit 1
bench_fails "closed while the workload was prepared" "$strict_port" \
	--workload ops-mix --conns 16
echo "ok $IO: a connection closed while preparing is a clear error"
exit 0
