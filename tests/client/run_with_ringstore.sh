#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run_with_ringstore.sh SERVER TEST [FLAGS...] - start the ringstore binary
# SERVER (with FLAGS, e.g. --io epoll) on an ephemeral loopback port, run the test program TEST with RS_TEST_ADDR set to
# it, stop the server, and exit with TEST's status (the server's own exit
# status must be 0 too). Used by CTest so `ctest -R client` needs no Python;
# tests/compat/test_c_client.py runs the same program against PyTorch's
# server as well.
set -u
server=$1
test=$2
shift 2
out=$(mktemp)
"$server" --port 0 --bind 127.0.0.1 "$@" >"$out" 2>/dev/null </dev/null &
pid=$!
addr=
i=0
while [ $i -lt 200 ]; do
	line=$(head -n 1 "$out")
	case "$line" in
	"ringstore listening on "*) addr=${line#ringstore listening on }; break ;;
	esac
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.05
	i=$((i + 1))
done
rm -f "$out"
if [ -z "$addr" ]; then
	echo "run_with_ringstore: $server did not start" >&2
	kill "$pid" 2>/dev/null
	exit 1
fi
RS_TEST_ADDR=$addr "$test"
rc=$?
kill -TERM "$pid"
wait "$pid"
src=$?
if [ "$src" -ne 0 ]; then
	echo "run_with_ringstore: server exited with $src" >&2
	[ "$rc" -eq 0 ] && rc=1
fi
exit $rc
