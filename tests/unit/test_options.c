/* SPDX-License-Identifier: MIT */
/*
 * test_options.c - the command line (server/options.c), sans-I/O: argv
 * arrays parsed into a struct options, checking the defaults, each kind of
 * value (numbers and their ranges, sizes with K/M/G, seconds kept as
 * milliseconds, on|off, words, strings, a log level, the repeatable
 * --allow), the errors and their messages, the flags that end the parse,
 * and the --help text generated from the same table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "log.h"
#include "net.h"
#include "options.h"
#include "proto.h"
#include "recvbufs.h"
#include "wal.h"

/* getopt_long reorders argv, so each parse gets a writable copy. */
#define MAX_ARGS 16

static struct options o;
static struct options_error err;

/* Parse "ringstore" followed by @args (NULL-terminated) into o. */
static int parse_v(const char *const *args)
{
	char *argv[MAX_ARGS + 2] = { "ringstore" };
	int argc = 1;

	options_free(&o);
	memset(&err, 0, sizeof(err));
	while (args[argc - 1]) {
		assert_true(argc <= MAX_ARGS);
		argv[argc] = (char *)args[argc - 1];
		argc++;
	}
	return options_parse(&o, argc, argv, &err);
}

#define PARSE(...) parse_v((const char *const[]){ __VA_ARGS__, NULL })

/* The line parses; o holds it. */
#define ACCEPT(...) assert_int_equal(PARSE(__VA_ARGS__), 0)

/* The line is refused with exactly @msg; @usage: the usage is due. */
static void refuse_v(const char *const *args, const char *msg, bool usage)
{
	assert_int_equal(parse_v(args), -EINVAL);
	assert_string_equal(err.msg, msg);
	assert_int_equal(err.usage, usage);
}

#define REFUSE(msg, ...) \
	refuse_v((const char *const[]){ __VA_ARGS__, NULL }, (msg), false)
#define REFUSE_LINE(msg, ...) \
	refuse_v((const char *const[]){ __VA_ARGS__, NULL }, (msg), true)

static int teardown(void **state)
{
	(void)state;
	options_free(&o);
	return 0;
}

static void test_defaults(void **state)
{
	struct proto_limits lim;

	(void)state;
	assert_int_equal(parse_v((const char *const[]){ NULL }), 0);
	/* The table's defaults agree with the constants that name them. */
	proto_limits_default(&lim);
	assert_memory_equal(&o.cfg.limits, &lim, sizeof(lim));
	assert_int_equal(o.cfg.buf_count, RECV_BUFS_DEFAULT_COUNT);
	assert_int_equal(o.cfg.buf_min, RECV_BUFS_DEFAULT_MIN);
	assert_int_equal(o.cfg.buf_size, 16384);
	assert_int_equal(o.cfg.max_output, 256u << 20);
	assert_int_equal(o.cfg.handshake_ms, 10000);
	assert_int_equal(o.cfg.control_idle_ms, 60000);
	assert_int_equal(o.cfg.max_conns, 0);
	assert_null(o.cfg.allow);
	assert_int_equal(o.cfg.nallow, 0);
	assert_false(o.cfg.single_acceptor);
	assert_false(o.cfg.fixed_files);
	assert_int_equal(o.cfg.threads, 0); /* main() sizes it by the CPUs */
	assert_int_equal(o.port, 29500);
	assert_null(o.bind);
	assert_int_equal(o.listen_fd, -1);
	assert_int_equal(o.backlog, -1);
	assert_int_equal(o.initial_keys, 1024);
	assert_int_equal(o.max_memory, 0);
	assert_int_equal(o.keepalive, 60);
	assert_int_equal(o.control_port, -1);
	assert_string_equal(o.control_bind, "127.0.0.1");
	assert_null(o.control_socket);
	assert_int_equal(o.io, OPTIONS_IO_AUTO);
	assert_true(o.mget_cache);
	assert_int_equal(o.spread_sends, -1);
	assert_null(o.data_dir); /* no write log */
	assert_int_equal(o.fsync, WAL_FSYNC_EVERYSEC);
	assert_false(o.repair_log);
	assert_int_equal(o.compact_min_bytes, WAL_COMPACT_MIN_DEFAULT);
	assert_int_equal(o.idle_exit_s, 0);
	assert_int_equal(o.log_level, LOG_LVL_INFO);
	assert_false(o.help);
	assert_false(o.version);
}

static void test_values(void **state)
{
	(void)state;
	ACCEPT("-p", "0", "-b", "127.0.0.1", "-t", "3", "--listen-fd", "7",
	       "--backlog", "64", "--initial-keys", "4096");
	assert_int_equal(o.port, 0);
	assert_string_equal(o.bind, "127.0.0.1");
	assert_int_equal(o.cfg.threads, 3);
	assert_int_equal(o.listen_fd, 7);
	assert_int_equal(o.backlog, 64);
	assert_int_equal(o.initial_keys, 4096);
	/* --name=value, a unique prefix, and a short letter's value attached. */
	ACCEPT("--port=65535", "--thr", "256", "-l", "debug", "-bhost");
	assert_int_equal(o.port, 65535);
	assert_int_equal(o.cfg.threads, 256);
	assert_int_equal(o.log_level, LOG_LVL_DEBUG);
	assert_string_equal(o.bind, "host");
	/* A flag given twice keeps its last value. */
	ACCEPT("--port", "1", "--port", "2");
	assert_int_equal(o.port, 2);
	ACCEPT("--max-key-bytes", "1", "--max-keys-per-request", "4294967295",
	       "--max-connections", "100", "--keepalive", "0", "--spread-sends",
	       "4294967295", "--recv-buffer-size", "512");
	assert_int_equal(o.cfg.limits.max_key, 1);
	assert_int_equal(o.cfg.limits.max_keys, UINT32_MAX);
	assert_int_equal(o.cfg.max_conns, 100);
	assert_int_equal(o.keepalive, 0);
	assert_int_equal(o.spread_sends, UINT32_MAX);
	assert_int_equal(o.cfg.buf_size, 512);
	/* Seconds are kept as milliseconds. */
	ACCEPT("--handshake-timeout", "86400", "--control-idle-timeout", "0");
	assert_int_equal(o.cfg.handshake_ms, 86400000u);
	assert_int_equal(o.cfg.control_idle_ms, 0);
	ACCEPT("--control-port", "9100", "--control-bind", "::1",
	       "--control-socket", "/run/rs.sock");
	assert_int_equal(o.control_port, 9100);
	assert_string_equal(o.control_bind, "::1");
	assert_string_equal(o.control_socket, "/run/rs.sock");
}

static void test_ranges(void **state)
{
	(void)state;
	REFUSE("--port wants a number from 0 to 65535, not '65536'", "--port",
	       "65536");
	REFUSE("--threads wants a number from 1 to 256, not '0'", "-t", "0");
	REFUSE("--threads wants a number from 1 to 256, not '257'", "-t",
	       "257");
	REFUSE("--recv-buffer-size wants a number from 512 to 1048576, not "
	       "'511'",
	       "--recv-buffer-size", "511");
	REFUSE("--handshake-timeout wants a number from 0 to 86400, not "
	       "'86401'",
	       "--handshake-timeout", "86401");
	/* Not a number: a sign, a blank, nothing, trailing junk, too big. */
	REFUSE("--spread-sends wants a number from 0 to 4294967295, not '-1'",
	       "--spread-sends", "-1");
	REFUSE("--max-key-bytes wants a number from 1 to 4294967295, not "
	       "'x'",
	       "--max-key-bytes", "x");
	REFUSE("--port wants a number from 0 to 65535, not '+80'", "--port",
	       "+80");
	REFUSE("--port wants a number from 0 to 65535, not ' 80'", "--port",
	       " 80");
	REFUSE("--port wants a number from 0 to 65535, not ''", "--port", "");
	REFUSE("--port wants a number from 0 to 65535, not '80x'", "--port",
	       "80x");
	REFUSE("--max-memory wants a number from 0 to 18446744073709551615, "
	       "not '18446744073709551616'",
	       "--max-memory", "18446744073709551616");
	/* The checks after a value's range. */
	REFUSE("--recv-buffers must be a power of two", "--recv-buffers",
	       "100");
	ACCEPT("--recv-buffers", "16", "--recv-buffers-min", "16");
	assert_int_equal(o.cfg.buf_count, 16);
	assert_int_equal(o.cfg.buf_min, 16);
	/* The default minimum (64) above a small ring is not an error. */
	ACCEPT("--recv-buffers", "16");
	assert_int_equal(o.cfg.buf_min, RECV_BUFS_DEFAULT_MIN);
	/* One given must fit the ring, in whichever order they come. */
	REFUSE("--recv-buffers-min 128 exceeds --recv-buffers 64; give at "
	       "most 64 (equal: a fixed ring)",
	       "--recv-buffers-min", "128", "--recv-buffers", "64");
	REFUSE("--recv-buffers-min 128 exceeds --recv-buffers 64; give at "
	       "most 64 (equal: a fixed ring)",
	       "--recv-buffers", "64", "--recv-buffers-min", "128");
}

static void test_sizes(void **state)
{
	(void)state;
	ACCEPT("--max-value-bytes", "8K", "--max-request-bytes", "3m",
	       "--max-memory", "1G", "--max-output-bytes", "4096");
	assert_int_equal(o.cfg.limits.max_value, 8192);
	assert_int_equal(o.cfg.limits.max_request, 3u << 20);
	assert_int_equal(o.max_memory, 1ull << 30);
	assert_int_equal(o.cfg.max_output, 4096);
	ACCEPT("--max-value-bytes", "4194303K", "--max-memory", "17179869183G");
	assert_int_equal(o.cfg.limits.max_value, 4194303ull << 10);
	assert_int_equal(o.max_memory, 17179869183ull << 30);
	/* The range applies after the suffix. */
	REFUSE("--max-value-bytes wants a number from 0 to 4294967295, not "
	       "'4G'",
	       "--max-value-bytes", "4G");
	REFUSE("--max-output-bytes wants a number from 4096 to "
	       "18446744073709551615, not '3K'",
	       "--max-output-bytes", "3K");
	/* A suffix past 64 bits, an unknown one, two, or one alone. */
	REFUSE("--max-memory wants a number from 0 to 18446744073709551615, "
	       "not '17179869184G'",
	       "--max-memory", "17179869184G");
	REFUSE("--max-memory wants a number from 0 to 18446744073709551615, "
	       "not '12Q'",
	       "--max-memory", "12Q");
	REFUSE("--max-memory wants a number from 0 to 18446744073709551615, "
	       "not '1KB'",
	       "--max-memory", "1KB");
	REFUSE("--max-memory wants a number from 0 to 18446744073709551615, "
	       "not 'K'",
	       "--max-memory", "K");
	/* A plain number takes no suffix. */
	REFUSE("--max-key-bytes wants a number from 1 to 4294967295, not "
	       "'8K'",
	       "--max-key-bytes", "8K");
}

static void test_words(void **state)
{
	(void)state;
	ACCEPT("--io", "uring", "--accept", "single", "--mget-cache", "off",
	       "--fixed-files", "on");
	assert_int_equal(o.io, OPTIONS_IO_URING);
	assert_true(o.cfg.single_acceptor);
	assert_false(o.mget_cache);
	assert_true(o.cfg.fixed_files);
	ACCEPT("--io", "epoll", "--accept", "reuseport", "--mget-cache", "on",
	       "--fixed-files", "off");
	assert_int_equal(o.io, OPTIONS_IO_EPOLL);
	assert_false(o.cfg.single_acceptor);
	assert_true(o.mget_cache);
	assert_false(o.cfg.fixed_files);
	ACCEPT("--io", "auto");
	assert_int_equal(o.io, OPTIONS_IO_AUTO);
	REFUSE("--io wants 'auto', 'uring' or 'epoll'", "--io", "kqueue");
	REFUSE("--io wants 'auto', 'uring' or 'epoll'", "--io", "URING");
	REFUSE("--accept wants 'reuseport' or 'single'", "--accept", "one");
	REFUSE("--mget-cache wants 'on' or 'off'", "--mget-cache", "maybe");
	REFUSE("--fixed-files wants 'on' or 'off'", "--fixed-files", "yes");
	/* The write log's: the word's index is the enum wal_fsync. */
	ACCEPT("--data-dir", "/var/lib/ringstore", "--fsync", "always",
	       "--repair-log", "--compact-min-bytes", "1M");
	assert_string_equal(o.data_dir, "/var/lib/ringstore");
	assert_int_equal(o.fsync, WAL_FSYNC_ALWAYS);
	assert_true(o.repair_log);
	assert_int_equal(o.compact_min_bytes, 1u << 20);
	ACCEPT("--fsync", "no");
	assert_int_equal(o.fsync, WAL_FSYNC_NO);
	ACCEPT("--fsync", "everysec");
	assert_int_equal(o.fsync, WAL_FSYNC_EVERYSEC);
	REFUSE("--fsync wants 'always', 'everysec' or 'no'", "--fsync", "1");
	REFUSE("--compact-min-bytes wants a number from 4096 to "
	       "18446744073709551615, not '1'",
	       "--compact-min-bytes", "1");
	/* Log levels as log_parse_level() reads them. */
	ACCEPT("--log-level", "WARNING");
	assert_int_equal(o.log_level, LOG_LVL_WARN);
	ACCEPT("-l", "error");
	assert_int_equal(o.log_level, LOG_LVL_ERROR);
	REFUSE("unknown log level 'loud'", "--log-level", "loud");
}

static void test_repeatable_allow(void **state)
{
	struct net_cidr want;

	(void)state;
	ACCEPT("--allow", "10.0.0.0/8", "--port", "1", "--allow", "::1",
	       "--allow=192.168.1.7");
	assert_int_equal(o.cfg.nallow, 3);
	assert_int_equal(net_parse_cidr("10.0.0.0/8", &want), 0);
	assert_memory_equal(&o.cfg.allow[0], &want, sizeof(want));
	assert_int_equal(net_parse_cidr("::1", &want), 0);
	assert_memory_equal(&o.cfg.allow[1], &want, sizeof(want));
	assert_int_equal(net_parse_cidr("192.168.1.7", &want), 0);
	assert_memory_equal(&o.cfg.allow[2], &want, sizeof(want));
	REFUSE("--allow wants an address or ADDR/PREFIX, not '10.0.0.0/33'",
	       "--allow", "::1", "--allow", "10.0.0.0/33");
	REFUSE("--allow wants an address or ADDR/PREFIX, not '300.1.1.1/8'",
	       "--allow", "300.1.1.1/8");
	/* options_free() leaves a struct that parses again. */
	options_free(&o);
	assert_null(o.cfg.allow);
	assert_int_equal(o.cfg.nallow, 0);
}

static void test_help_and_version_end_the_parse(void **state)
{
	(void)state;
	ACCEPT("--help", "--port", "70000", "stray");
	assert_true(o.help);
	ACCEPT("-V", "--no-such-flag");
	assert_true(o.version);
	assert_false(o.help);
	ACCEPT("-h");
	assert_true(o.help);
	/* Ended inside a cluster of letters: the next parse starts afresh. */
	ACCEPT("-hV");
	assert_true(o.help);
	assert_false(o.version);
	ACCEPT("-p", "5");
	assert_false(o.version);
	assert_int_equal(o.port, 5);
	/* What comes before them is read, errors included. */
	REFUSE("--port wants a number from 0 to 65535, not '70000'", "--port",
	       "70000", "--help");
}

static void test_bad_lines(void **state)
{
	(void)state;
	REFUSE_LINE("unrecognized option '--no-such-flag'", "--no-such-flag");
	REFUSE_LINE("unexpected argument 'extra'", "--port", "1", "extra");
	REFUSE_LINE("--port wants a value", "--port");
	REFUSE_LINE("-p wants a value", "-p");
	REFUSE_LINE("--help takes no value", "--help=x");
	REFUSE_LINE("unknown option '-Z'", "-Z");
	REFUSE_LINE("ambiguous option '--control': --control-port, "
		    "--control-bind, --control-socket, "
		    "--control-idle-timeout",
		    "--control", "1");
	/* An exact name is not ambiguous with the longer ones it begins. */
	ACCEPT("--recv-buffers", "32");
	assert_int_equal(o.cfg.buf_count, 32);
}

/* Every line of the usage, one by one, into @lines (at most @max). */
static size_t usage_lines(char *text, char **lines, size_t max)
{
	size_t n = 0;

	for (char *save, *l = strtok_r(text, "\n", &save); l && n < max;
	     l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	return n;
}

static void test_usage(void **state)
{
	static const char *const flags[] = {
		"  -p, --port N ",
		"  -b, --bind ADDR ",
		"      --listen-fd N ",
		"      --backlog N ",
		"  -t, --threads N ",
		"      --io MODE ",
		"      --accept MODE ",
		"      --max-key-bytes N ",
		"      --max-value-bytes N ",
		"      --max-keys-per-request N ",
		"      --max-request-bytes N ",
		"      --max-memory N ",
		"      --max-output-bytes N ",
		"      --max-connections N ",
		"      --handshake-timeout S ",
		"      --allow CIDR ",
		"      --keepalive S ",
		"      --recv-buffers N ",
		"      --recv-buffers-min N ",
		"      --recv-buffer-size N ",
		"      --initial-keys N ",
		"      --mget-cache on|off ",
		"      --fixed-files on|off ",
		"      --spread-sends N ",
		"      --data-dir DIR ",
		"      --fsync MODE ",
		"      --repair-log ",
		"      --compact-min-bytes N ",
		"      --control-port N ",
		"      --control-bind ADDR ",
		"      --control-socket PATH ",
		"      --control-idle-timeout S ",
		"      --idle-exit S ",
		"  -l, --log-level LEVEL ",
		"  -h, --help ",
		"  -V, --version ",
	};
	static const char *const sections[] = {
		"Listening:",   "Threads and I/O:", "Limits (", "Tuning:",
		"Durability (", "Control plane (",  "Other:",
	};
	char *text = NULL, *lines[256] = { NULL };
	size_t len = 0, n, f = 0, s = 0;
	FILE *mem = open_memstream(&text, &len);

	(void)state;
	assert_non_null(mem);
	options_usage(mem);
	assert_int_equal(fclose(mem), 0);
	/* Defaults come from the table, after the text; a flag without one
	 * says in words what it does when not given. A long left part gets
	 * a gap of two; a long text wraps into the column. */
	assert_non_null(strstr(text, "\n  -p, --port N              TCP port; "
				     "0 picks a free one (default 29500)\n"));
	assert_non_null(strstr(text, "\n      --max-value-bytes N   longest "
				     "value (default 8M)\n"));
	assert_non_null(strstr(text,
			       "\n      --backlog N           listen "
			       "backlog (default: the kernel maximum)\n"));
	assert_non_null(strstr(text, "\n      --max-keys-per-request N  keys "
				     "in CHECK/WAIT/MULTI_* (default 131072)"
				     "\n"));
	assert_non_null(strstr(text, "\n      --control-bind ADDR   its "
				     "address (default 127.0.0.1)\n"));
	assert_non_null(strstr(text, "\n  -h, --help                this "
				     "text\n"));
	assert_non_null(strstr(text,
			       "\n      --handshake-timeout S seconds "
			       "a new connection has to send VALIDATE;"
			       "\n                            0: no limit "
			       "(default 10)\n"));
	n = usage_lines(text, lines, ARRAY_SIZE(lines));
	assert_true(n > 40);
	assert_string_equal(lines[0], "Usage: ringstore [options]");
	/* Every flag, every section, in order; no line past 80 columns. */
	for (size_t i = 0; i < n; i++) {
		assert_true(strlen(lines[i]) <= 80);
		if (f < ARRAY_SIZE(flags) &&
		    !strncmp(lines[i], flags[f], strlen(flags[f])))
			f++;
		if (s < ARRAY_SIZE(sections) &&
		    !strncmp(lines[i], sections[s], strlen(sections[s])))
			s++;
	}
	assert_int_equal(f, ARRAY_SIZE(flags));
	assert_int_equal(s, ARRAY_SIZE(sections));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_defaults, teardown),
		cmocka_unit_test_teardown(test_values, teardown),
		cmocka_unit_test_teardown(test_ranges, teardown),
		cmocka_unit_test_teardown(test_sizes, teardown),
		cmocka_unit_test_teardown(test_words, teardown),
		cmocka_unit_test_teardown(test_repeatable_allow, teardown),
		cmocka_unit_test_teardown(test_help_and_version_end_the_parse,
					  teardown),
		cmocka_unit_test_teardown(test_bad_lines, teardown),
		cmocka_unit_test(test_usage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
