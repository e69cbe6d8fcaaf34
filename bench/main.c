/* SPDX-License-Identifier: MIT */
/*
 * main.c - ringstore-bench's command line: options, the workload looked up
 * in workload.c's table, and one run of the engine (engine.c).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "net.h"
#include "workload.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ringstore-bench [options]\n"
		"Load generator for TCPStore servers (ringstore, PyTorch's libuv and\n"
		"classic servers), driving its connections through io_uring.\n\n"
		"  --addr HOST:PORT        server (default 127.0.0.1:29500)\n"
		"  --workload W            one of the workloads below (default multi-get)\n"
		"  --conns N               connections / ranks / waiters (default 64)\n"
		"  --pipeline D            requests in flight per connection, multi-*\n"
		"                          only (default 8, max %d)\n"
		"  --keys K                keys per MULTI_* request (default 16)\n"
		"  --key-bytes N           key size (default 16, min 12)\n"
		"  --value-bytes N         value size (default 64)\n"
		"  --keyspace N            distinct keys (default per workload)\n"
		"  --duration S            measured seconds (default 10)\n"
		"  --ops N                 stop after N operations instead\n"
		"  --rounds R              nccl-init: MULTI_GETs per connection (default 1)\n"
		"  --threads T             bench threads, one ring each (default 1)\n"
		"  --rate R                heartbeat: CHECKs per connection per second;\n"
		"                          multi-*: paced (open loop) at R requests per\n"
		"                          connection per second, <= --pipeline in flight\n"
		"  --total-rate R          the same, R per second over all connections\n"
		"  --queue-max N           queue: producers pause above N (default 1000)\n"
		"  --src-addrs K           spread connections over 127.0.0.1..K\n"
		"                          (default: one per %u connections)\n"
		"  --connect-inflight N    connects in flight (default 256)\n"
		"  --server-pid PID        sample the server's CPU (utime+stime over\n"
		"                          the measured window) and RSS from /proc\n"
		"  --server-metrics H:P    read ringstore's write-log counters from its\n"
		"                          control plane (GET /metrics) at both ends\n"
		"                          of the measured window: syncs and bytes\n"
		"  --label TEXT            copied into the JSON report\n"
		"  --json                  one JSON object on stdout\n"
		"  --no-progress           no live line on stderr\n"
		"  -h, --help\n\n"
		"Workloads (their defaults yield to the options above):\n",
		BENCH_MAX_PIPELINE, BENCH_PORTS_PER_SRC);
	workload_usage(f);
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_opts(int argc, char **argv, struct bench_opts *o)
{
	enum {
		O_ADDR = 256,
		O_CONNS,
		O_PIPE,
		O_KEYS,
		O_KB,
		O_VB,
		O_KS,
		O_DUR,
		O_OPS,
		O_THR,
		O_JSON,
		O_WL,
		O_PID,
		O_SRC,
		O_CI,
		O_RATE,
		O_QMAX,
		O_NOPROG,
		O_LABEL,
		O_TRATE,
		O_ROUNDS,
		O_METRICS,
	};
	static const struct option lo[] = {
		{ "addr", 1, NULL, O_ADDR },
		{ "conns", 1, NULL, O_CONNS },
		{ "pipeline", 1, NULL, O_PIPE },
		{ "keys", 1, NULL, O_KEYS },
		{ "key-bytes", 1, NULL, O_KB },
		{ "value-bytes", 1, NULL, O_VB },
		{ "keyspace", 1, NULL, O_KS },
		{ "duration", 1, NULL, O_DUR },
		{ "ops", 1, NULL, O_OPS },
		{ "threads", 1, NULL, O_THR },
		{ "json", 0, NULL, O_JSON },
		{ "workload", 1, NULL, O_WL },
		{ "server-pid", 1, NULL, O_PID },
		{ "server-metrics", 1, NULL, O_METRICS },
		{ "src-addrs", 1, NULL, O_SRC },
		{ "connect-inflight", 1, NULL, O_CI },
		{ "rate", 1, NULL, O_RATE },
		{ "queue-max", 1, NULL, O_QMAX },
		{ "no-progress", 0, NULL, O_NOPROG },
		{ "label", 1, NULL, O_LABEL },
		{ "total-rate", 1, NULL, O_TRATE },
		{ "rounds", 1, NULL, O_ROUNDS },
		{ "help", 0, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *addr = "127.0.0.1:29500";
	int c;
	uint64_t v;

	/* 0 (or UINT32_MAX for the value size) is "unset": see the end. */
	*o = (struct bench_opts){
		.value_bytes = UINT32_MAX,
		.duration = 10,
		.threads = 1,
		.wl = workload_find("multi-get"),
		.connect_inflight = 256,
		.queue_max = 1000,
		.progress = isatty(STDERR_FILENO),
	};
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		int err = 0;
		switch (c) {
		case O_ADDR:
			addr = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_NOPROG:
			o->progress = false;
			break;
		case O_LABEL:
			o->label = optarg;
			break;
		case O_METRICS:
			o->server_metrics = optarg;
			break;
		case O_WL:
			o->wl = workload_find(optarg);
			err = !o->wl;
			break;
		case O_DUR:
			o->duration = strtod(optarg, NULL);
			err = !(o->duration > 0);
			break;
		case O_RATE:
			o->rate = strtod(optarg, NULL);
			err = !(o->rate > 0);
			break;
		case O_TRATE:
			o->total_rate = strtod(optarg, NULL);
			err = !(o->total_rate > 0);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case '?':
			return -EINVAL;
		default:
			err = parse_u64(optarg, &v) < 0;
			if (err)
				break;
			switch (c) {
			case O_CONNS:
				o->conns = (uint32_t)v;
				err = !v || v > 1000000;
				break;
			case O_PIPE:
				o->pipeline = (uint32_t)v;
				err = !v || v > BENCH_MAX_PIPELINE;
				break;
			case O_KEYS:
				o->keys = (uint32_t)v;
				err = !v || v > 4096;
				break;
			case O_KB:
				o->key_bytes = (uint32_t)v;
				err = v < 12 || v > 8192;
				break;
			case O_VB:
				o->value_bytes = (uint32_t)v;
				err = v > (1u << 20);
				break;
			case O_KS:
				o->keyspace = v;
				err = !v || v >= 100000000ull;
				break;
			case O_OPS:
				o->ops = v;
				break;
			case O_THR:
				o->threads = (uint32_t)v;
				err = !v || v > 64;
				break;
			case O_PID:
				o->server_pid = (int)v;
				break;
			case O_SRC:
				o->src_addrs = (uint32_t)v;
				err = v > 65000;
				break;
			case O_CI:
				o->connect_inflight = (uint32_t)v;
				err = !v;
				break;
			case O_QMAX:
				o->queue_max = (uint32_t)v;
				break;
			case O_ROUNDS:
				o->rounds = (uint32_t)v;
				err = !v || v > 1000000;
				break;
			}
			break;
		}
		if (err) {
			fprintf(stderr,
				"ringstore-bench: bad value for --%s: %s\n",
				lo[c - O_ADDR].name, optarg ? optarg : "");
			return -EINVAL;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ringstore-bench: unexpected argument %s\n",
			argv[optind]);
		return -EINVAL;
	}
	if (net_split_hostport(addr, o->host, sizeof(o->host), &o->port) ||
	    !o->port) {
		fprintf(stderr, "ringstore-bench: bad --addr %s\n", addr);
		return -EINVAL;
	}
	if (!o->host[0])
		strcpy(o->host, "127.0.0.1");
	bench_opts_fill(o, &o->wl->dflt);
	if (o->wl->adjust)
		o->wl->adjust(o);
	bench_opts_fill(o, &bench_fallback);
	return 0;
}

int main(int argc, char **argv)
{
	static struct bench b;

	if (parse_opts(argc, argv, &b.o) < 0) {
		usage(stderr);
		return 2;
	}
	int ret = bench_run(&b);
	if (ret < 0) {
		fprintf(stderr, "ringstore-bench: %s\n", strerror(-ret));
		return 2;
	}
	return ret;
}
