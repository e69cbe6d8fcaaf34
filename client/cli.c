/* SPDX-License-Identifier: MIT */
/*
 * cli.c - ringstore-cli: one subcommand per libringstore call.
 *
 *   ringstore-cli --addr HOST:PORT [--timeout S] [--connect-timeout S]
 *                 [--raw] [--json] OP [ARGS...] [OP-OPTIONS]
 *
 * Output is meant for scripts: values are written raw to stdout (no newline
 * added), numbers as one decimal line, lists one item per line; --json
 * prints one JSON object per line instead (bytes that are not valid UTF-8
 * become {"base64": "..."}). Diagnostics go to stderr. The exit status says
 * what happened (see exit_help below and README).
 *
 * The CLI is a thin shell over the public API only (ringstore.h); it holds
 * one client for the one operation it runs, and only main() exits.
 * `wait --watch` turns the client's reconnect on (RS_RECONNECT), so a watch
 * outlives a restart of the server: WAIT and CHECK are reads, which the
 * library sends again on the new connection.
 */
#include "ringstore.h"

#include "cli_control.h"
#include "now.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
	EXIT_OK = 0,
	EXIT_USAGE = 1,    /* bad command line */
	EXIT_CONNECT = 2,  /* could not connect / handshake / reconnect */
	EXIT_TIMEOUT = 3,  /* wait, barrier, get or blocking pop timed out */
	EXIT_NOTFOUND = 4, /* key missing, queue empty, check false, delete 0 */
	EXIT_SERVER = 5,   /* protocol error, server closed, I/O error */
};

static const char exit_help[] =
	"exit status: 0 ok, 1 usage, 2 connect or reconnect failure,\n"
	"             3 timeout,\n"
	"             4 key not found / queue empty / check false / nothing "
	"deleted,\n"
	"             5 protocol or server error (connection closed, bad "
	"reply)\n";

/* Per-op options (parsed after the op name). */
#define O_NO_BLOCK 0x1u
#define O_WATCH 0x2u
#define O_NO_WAIT 0x4u
#define O_RECONNECT 0x8u /* --reconnect given */

/* Reconnect deadline of wait --watch unless --reconnect says otherwise. */
#define WATCH_RECONNECT_MS RS_DEFAULT_RECONNECT_MS

struct cli {
	struct rs_client *c;
	bool json;
	int64_t timeout_ms;   /* RS_TIMEOUT_NONE or >= 0 */
	double interval_s;    /* --watch progress interval */
	int64_t reconnect_ms; /* --reconnect: 0 off, RS_TIMEOUT_NONE, or ms */
	unsigned flags;       /* O_* */
	const struct cmd *cmd;
};

struct cmd {
	const char *name;
	int (*run)(struct cli *cl, int argc, char **argv);
	int min_args;
	int max_args;  /* -1: no limit */
	unsigned opts; /* O_* accepted besides --timeout and --help */
	const char *synopsis;
	const char *help;
};

/* Map a library error to an exit status and report it. */
static int fail(const struct cli *cl, int err, const char *what)
{
	int code;

	switch (-err) {
	case ETIMEDOUT:
		code = EXIT_TIMEOUT;
		break;
	case ENOENT:
	case EAGAIN:
		code = EXIT_NOTFOUND;
		break;
	case EINVAL:
		code = EXIT_USAGE;
		break;
	case ENOTCONN: /* reconnecting failed within its deadline */
		code = EXIT_CONNECT;
		break;
	default:
		code = EXIT_SERVER;
	}
	fprintf(stderr, "ringstore-cli: %s: %s\n", what, rs_strerror(err));
	if (cl->json)
		printf("{\"ok\":false,\"op\":\"%s\",\"error\":\"%s\","
		       "\"exit\":%d}\n",
		       cl->cmd ? cl->cmd->name : "connect", rs_strerror(err),
		       code);
	return code;
}

/* JSON output. */

static bool utf8_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t b = p[i];
		size_t len;
		uint32_t cp;

		if (b < 0x80) {
			i++;
			continue;
		} else if ((b & 0xe0) == 0xc0) {
			len = 2;
			cp = b & 0x1f;
		} else if ((b & 0xf0) == 0xe0) {
			len = 3;
			cp = b & 0x0f;
		} else if ((b & 0xf8) == 0xf0) {
			len = 4;
			cp = b & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

/* A JSON string for valid UTF-8, else {"base64":"..."}. */
static void json_bytes(const void *data, size_t n)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *p = data;

	if (utf8_valid(p, n)) {
		putchar('"');
		for (size_t i = 0; i < n; i++) {
			uint8_t b = p[i];
			if (b == '"' || b == '\\')
				printf("\\%c", b);
			else if (b == '\n')
				fputs("\\n", stdout);
			else if (b == '\t')
				fputs("\\t", stdout);
			else if (b < 0x20 || b == 0x7f)
				printf("\\u%04x", b);
			else
				putchar(b);
		}
		putchar('"');
		return;
	}
	fputs("{\"base64\":\"", stdout);
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		putchar(b64[(v >> 18) & 63]);
		putchar(b64[(v >> 12) & 63]);
		putchar(i + 1 < n ? b64[(v >> 6) & 63] : '=');
		putchar(i + 2 < n ? b64[v & 63] : '=');
	}
	fputs("\"}", stdout);
}

static void json_begin(const struct cli *cl)
{
	printf("{\"ok\":true,\"op\":\"%s\"", cl->cmd->name);
}

static void json_key(const char *name, const void *p, size_t n)
{
	printf(",\"%s\":", name);
	json_bytes(p, n);
}

static void json_end(void)
{
	puts("}");
}

/* Input helpers. */

/* Read all of stdin into a malloc'd buffer. Returns 0 or -errno. */
static int read_stdin(char **out, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *p = malloc(cap);

	if (!p)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			char *q = realloc(p, cap * 2);
			if (!q) {
				free(p);
				return -ENOMEM;
			}
			p = q;
			cap *= 2;
		}
		size_t r = fread(p + n, 1, cap - n, stdin);
		n += r;
		if (r == 0) {
			if (ferror(stdin)) {
				free(p);
				return -EIO;
			}
			break;
		}
	}
	*out = p;
	*len = n;
	return 0;
}

/*
 * The value argument of set/append/queue-push: the argument itself, or
 * stdin when it is "-" or missing. *owned is set when it must be freed.
 */
static int value_arg(int argc, char **argv, int idx, char **val, size_t *len,
		     char **owned)
{
	*owned = NULL;
	if (idx < argc && strcmp(argv[idx], "-") != 0) {
		*val = argv[idx];
		*len = strlen(argv[idx]);
		return 0;
	}
	int ret = read_stdin(owned, len);
	if (!ret)
		*val = *owned;
	return ret;
}

static int parse_i64(const char *s, int64_t *v)
{
	char *end;

	errno = 0;
	long long x = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return -EINVAL;
	*v = x;
	return 0;
}

/* Seconds (fractions allowed) or "none"/"inf" -> ms or RS_TIMEOUT_NONE. */
static int parse_seconds(const char *s, int64_t *ms)
{
	char *end;

	if (!strcmp(s, "none") || !strcmp(s, "inf")) {
		*ms = RS_TIMEOUT_NONE;
		return 0;
	}
	errno = 0;
	double d = strtod(s, &end);
	if (errno || end == s || *end || !(d >= 0) || d > 9e15 / 1000)
		return -EINVAL;
	*ms = (int64_t)llround(d * 1000.0);
	return 0;
}

/* Build key arrays from argv (C strings, lengths by strlen). */
static int key_arrays(int argc, char **argv, const void ***keys, size_t **lens)
{
	size_t n = argc > 0 ? (size_t)argc : 1;

	*keys = malloc(n * sizeof(**keys));
	*lens = malloc(n * sizeof(**lens));
	if (!*keys || !*lens) {
		/* Callers free both either way: leave no dangling pointer. */
		free(*keys);
		free(*lens);
		*keys = NULL;
		*lens = NULL;
		return -ENOMEM;
	}
	for (int i = 0; i < argc; i++) {
		(*keys)[i] = argv[i];
		(*lens)[i] = strlen(argv[i]);
	}
	return 0;
}

/* Subcommands: argv holds the positional arguments only. */

static int print_value(const struct cli *cl, const char *key, void *val,
		       size_t vlen)
{
	if (cl->json) {
		json_begin(cl);
		json_key("key", key, strlen(key));
		json_key("value", val, vlen);
		json_end();
	} else {
		fwrite(val, 1, vlen, stdout);
	}
	rs_free(val);
	return EXIT_OK;
}

static int print_number(const struct cli *cl, const char *name, int64_t v)
{
	if (cl->json) {
		json_begin(cl);
		printf(",\"%s\":%" PRId64, name, v);
		json_end();
	} else {
		printf("%" PRId64 "\n", v);
	}
	return EXIT_OK;
}

static int print_ok(const struct cli *cl)
{
	if (cl->json) {
		json_begin(cl);
		json_end();
	}
	return EXIT_OK;
}

/* set, append, queue-push: KEY [VALUE|-] */
static int cmd_key_value(struct cli *cl, int argc, char **argv)
{
	char *val, *owned;
	size_t vlen;
	int ret = value_arg(argc, argv, 1, &val, &vlen, &owned);

	if (ret)
		return fail(cl, ret, "reading the value from stdin");
	const char *op = cl->cmd->name;
	size_t klen = strlen(argv[0]);
	if (!strcmp(op, "set"))
		ret = rs_set(cl->c, argv[0], klen, val, vlen);
	else if (!strcmp(op, "append"))
		ret = rs_append(cl->c, argv[0], klen, val, vlen);
	else
		ret = rs_queue_push(cl->c, argv[0], klen, val, vlen);
	/* No reply for these ops: a ping proves the server took them. */
	if (!ret)
		ret = rs_ping(cl->c);
	free(owned);
	return ret ? fail(cl, ret, op) : print_ok(cl);
}

static int cmd_get(struct cli *cl, int argc, char **argv)
{
	void *val;
	size_t vlen;
	int ret;

	(void)argc;
	if (cl->flags & O_NO_WAIT)
		ret = rs_get_nowait(cl->c, argv[0], strlen(argv[0]), &val,
				    &vlen);
	else
		ret = rs_get(cl->c, argv[0], strlen(argv[0]), &val, &vlen);
	if (ret)
		return fail(cl, ret, "get");
	return print_value(cl, argv[0], val, vlen);
}

static int cmd_add(struct cli *cl, int argc, char **argv)
{
	int64_t delta = 1, v;
	int ret;

	if (argc > 1 && parse_i64(argv[1], &delta)) {
		fprintf(stderr, "ringstore-cli: add: bad number '%s'\n",
			argv[1]);
		return EXIT_USAGE;
	}
	ret = rs_add(cl->c, argv[0], strlen(argv[0]), delta, &v);
	return ret ? fail(cl, ret, "add") : print_number(cl, "value", v);
}

static int cmd_compare_set(struct cli *cl, int argc, char **argv)
{
	void *cur;
	size_t curlen;
	int ret;

	(void)argc;
	ret = rs_compare_set(cl->c, argv[0], strlen(argv[0]), argv[1],
			     strlen(argv[1]), argv[2], strlen(argv[2]), &cur,
			     &curlen);
	if (ret)
		return fail(cl, ret, "compare-set");
	bool swapped = curlen == strlen(argv[2]) &&
		       !memcmp(cur, argv[2], curlen);
	if (cl->json) {
		json_begin(cl);
		json_key("key", argv[0], strlen(argv[0]));
		json_key("value", cur, curlen);
		printf(",\"swapped\":%s", swapped ? "true" : "false");
		json_end();
		rs_free(cur);
		return EXIT_OK;
	}
	return print_value(cl, argv[0], cur, curlen);
}

static int cmd_check(struct cli *cl, int argc, char **argv)
{
	const void **keys;
	size_t *lens;
	int ret = key_arrays(argc, argv, &keys, &lens);

	if (!ret)
		ret = rs_check(cl->c, (size_t)argc, keys, lens);
	free(keys);
	free(lens);
	if (ret < 0)
		return fail(cl, ret, "check");
	if (cl->json) {
		json_begin(cl);
		printf(",\"ready\":%s", ret ? "true" : "false");
		json_end();
	} else {
		puts(ret ? "true" : "false");
	}
	return ret ? EXIT_OK : EXIT_NOTFOUND;
}

/* One progress report of wait --watch: which keys are there yet. */
static int watch_report(struct cli *cl, int argc, char **argv,
			const void **keys, const size_t *lens, double elapsed)
{
	int present = 0;

	if (cl->json)
		printf("{\"event\":\"progress\",\"elapsed\":%.3f,\"missing\":[",
		       elapsed);
	else
		fprintf(stderr, "[%7.1fs] waiting for", elapsed);
	for (int i = 0; i < argc; i++) {
		int r = rs_check(cl->c, 1, &keys[i], &lens[i]);
		if (r < 0)
			return r;
		if (r) {
			present++;
			continue;
		}
		if (cl->json) {
			if (i - present > 0)
				putchar(',');
			json_bytes(argv[i], lens[i]);
		} else {
			fprintf(stderr, " %s", argv[i]);
		}
	}
	if (cl->json) {
		printf("],\"present\":%d,\"total\":%d}\n", present, argc);
		fflush(stdout);
	} else {
		fprintf(stderr, " (%d/%d present)\n", present, argc);
	}
	return 0;
}

/* wait --watch: report each reconnect the last call made. */
static void watch_reconnects(struct cli *cl, uint64_t *seen, double elapsed)
{
	uint64_t n = rs_reconnects(cl->c);

	if (n == *seen)
		return;
	*seen = n;
	if (cl->json) {
		printf("{\"event\":\"reconnected\",\"elapsed\":%.3f,"
		       "\"reconnects\":%" PRIu64 "}\n",
		       elapsed, n);
		fflush(stdout);
	} else {
		fprintf(stderr,
			"[%7.1fs] connection lost; reconnected "
			"(%" PRIu64 " so far)\n",
			elapsed, n);
	}
}

static int cmd_wait(struct cli *cl, int argc, char **argv)
{
	const void **keys;
	size_t *lens;
	uint64_t reconnects = 0;
	int64_t start = (int64_t)now_mono_ms();
	int ret = key_arrays(argc, argv, &keys, &lens);

	if (ret)
		return fail(cl, ret, "wait");
	if (!(cl->flags & O_WATCH)) {
		ret = rs_wait(cl->c, (size_t)argc, keys, lens, cl->timeout_ms);
	} else {
		int64_t slice = (int64_t)(cl->interval_s * 1000.0);
		int64_t deadline = cl->timeout_ms < 0 ? -1
						      : start + cl->timeout_ms;
		if (slice < 10)
			slice = 10;
		for (;;) {
			int64_t t = slice;
			if (deadline >= 0 &&
			    deadline - (int64_t)now_mono_ms() < t)
				t = deadline - (int64_t)now_mono_ms();
			if (t < 0)
				t = 0;
			ret = rs_wait(cl->c, (size_t)argc, keys, lens, t);
			double elapsed =
				(double)((int64_t)now_mono_ms() - start) / 1e3;
			watch_reconnects(cl, &reconnects, elapsed);
			if (ret != -ETIMEDOUT)
				break;
			if (deadline >= 0 && (int64_t)now_mono_ms() >= deadline)
				break;
			ret = watch_report(cl, argc, argv, keys, lens, elapsed);
			watch_reconnects(cl, &reconnects, elapsed);
			if (ret)
				break;
		}
	}
	free(keys);
	free(lens);
	if (ret)
		return fail(cl, ret, "wait");
	double elapsed = (double)((int64_t)now_mono_ms() - start) / 1e3;
	if (cl->json) {
		json_begin(cl);
		printf(",\"elapsed\":%.3f", elapsed);
		json_end();
	} else if (cl->flags & O_WATCH) {
		fprintf(stderr, "[%7.1fs] all %d key(s) present\n", elapsed,
			argc);
	}
	return EXIT_OK;
}

static int cmd_delete(struct cli *cl, int argc, char **argv)
{
	int ret;

	(void)argc;
	ret = rs_delete_key(cl->c, argv[0], strlen(argv[0]));
	if (ret < 0)
		return fail(cl, ret, "delete");
	print_number(cl, "deleted", ret);
	return ret ? EXIT_OK : EXIT_NOTFOUND;
}

static int cmd_num_keys(struct cli *cl, int argc, char **argv)
{
	int64_t n;
	int ret;

	(void)argc;
	(void)argv;
	ret = rs_num_keys(cl->c, &n);
	return ret ? fail(cl, ret, "num-keys") : print_number(cl, "count", n);
}

static int cmd_multi_get(struct cli *cl, int argc, char **argv)
{
	const void **keys;
	size_t *lens, *vlens;
	void **vals;
	int ret = key_arrays(argc, argv, &keys, &lens);

	if (!ret)
		ret = rs_multi_get(cl->c, (size_t)argc, keys, lens, &vals,
				   &vlens);
	free(keys);
	free(lens);
	if (ret)
		return fail(cl, ret, "multi-get");
	if (cl->json) {
		json_begin(cl);
		fputs(",\"values\":[", stdout);
		for (int i = 0; i < argc; i++) {
			printf("%s{\"key\":", i ? "," : "");
			json_bytes(argv[i], strlen(argv[i]));
			fputs(",\"value\":", stdout);
			json_bytes(vals[i], vlens[i]);
			putchar('}');
		}
		putchar(']');
		json_end();
	} else {
		for (int i = 0; i < argc; i++) {
			fwrite(vals[i], 1, vlens[i], stdout);
			putchar('\n');
		}
	}
	rs_free(vals);
	return EXIT_OK;
}

static int cmd_multi_set(struct cli *cl, int argc, char **argv)
{
	size_t n = (size_t)argc / 2;
	const void **keys, **vals;
	size_t *klens, *vlens;
	int ret;

	if (argc % 2) {
		fprintf(stderr, "ringstore-cli: multi-set: needs KEY VALUE "
				"pairs\n");
		return EXIT_USAGE;
	}
	keys = malloc(n * sizeof(*keys));
	vals = malloc(n * sizeof(*vals));
	klens = malloc(n * sizeof(*klens));
	vlens = malloc(n * sizeof(*vlens));
	if (!keys || !vals || !klens || !vlens) {
		ret = -ENOMEM;
	} else {
		for (size_t i = 0; i < n; i++) {
			keys[i] = argv[2 * i];
			klens[i] = strlen(argv[2 * i]);
			vals[i] = argv[2 * i + 1];
			vlens[i] = strlen(argv[2 * i + 1]);
		}
		ret = rs_multi_set(cl->c, n, keys, klens, vals, vlens);
		if (!ret)
			ret = rs_ping(cl->c);
	}
	free(keys);
	free(vals);
	free(klens);
	free(vlens);
	return ret ? fail(cl, ret, "multi-set") : print_ok(cl);
}

static int cmd_queue_pop(struct cli *cl, int argc, char **argv)
{
	void *val;
	size_t vlen;
	int ret;

	(void)argc;
	ret = rs_queue_pop(cl->c, argv[0], strlen(argv[0]),
			   !(cl->flags & O_NO_BLOCK), cl->timeout_ms, &val,
			   &vlen);
	if (ret)
		return fail(cl, ret, "queue-pop");
	return print_value(cl, argv[0], val, vlen);
}

static int cmd_queue_len(struct cli *cl, int argc, char **argv)
{
	int64_t n;
	int ret;

	(void)argc;
	ret = rs_queue_len(cl->c, argv[0], strlen(argv[0]), &n);
	return ret ? fail(cl, ret, "queue-len") : print_number(cl, "length", n);
}

/* Sort order for list-keys: bytewise, shorter first on a tie. */
struct key_list {
	char **keys;
	size_t *lens;
};

static int cmp_index(const void *a, const void *b, void *arg)
{
	const struct key_list *kl = arg;
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	size_t li = kl->lens[i], lj = kl->lens[j];
	int r = memcmp(kl->keys[i], kl->keys[j], li < lj ? li : lj);

	if (r)
		return r;
	return (li > lj) - (li < lj);
}

static int cmd_list_keys(struct cli *cl, int argc, char **argv)
{
	char **keys;
	size_t *lens, n, *idx;
	int ret;

	(void)argc;
	(void)argv;
	ret = rs_list_keys(cl->c, &keys, &lens, &n);
	if (ret)
		return fail(cl, ret, "list-keys");
	idx = malloc((n ? n : 1) * sizeof(*idx));
	if (!idx) {
		rs_free(keys);
		return fail(cl, -ENOMEM, "list-keys");
	}
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	struct key_list kl = { keys, lens };
	qsort_r(idx, n, sizeof(*idx), cmp_index, &kl);
	if (cl->json) {
		json_begin(cl);
		fputs(",\"keys\":[", stdout);
		for (size_t i = 0; i < n; i++) {
			if (i)
				putchar(',');
			json_bytes(keys[idx[i]], lens[idx[i]]);
		}
		putchar(']');
		json_end();
	} else {
		for (size_t i = 0; i < n; i++) {
			fwrite(keys[idx[i]], 1, lens[idx[i]], stdout);
			putchar('\n');
		}
	}
	free(idx);
	rs_free(keys);
	return EXIT_OK;
}

static int cmd_barrier(struct cli *cl, int argc, char **argv)
{
	int64_t ws;
	int ret;

	(void)argc;
	if (parse_i64(argv[1], &ws)) {
		fprintf(stderr, "ringstore-cli: barrier: bad world size '%s'\n",
			argv[1]);
		return EXIT_USAGE;
	}
	ret = rs_barrier(cl->c, argv[0], strlen(argv[0]), ws, cl->timeout_ms);
	return ret ? fail(cl, ret, "barrier") : print_ok(cl);
}

static int cmd_ping(struct cli *cl, int argc, char **argv)
{
	uint64_t t0 = now_mono_ns();
	int ret;

	(void)argc;
	(void)argv;
	ret = rs_ping(cl->c);
	if (ret)
		return fail(cl, ret, "ping");
	int64_t us = (int64_t)(now_mono_ns() - t0) / 1000;
	return print_number(cl, "rtt_us", us);
}

static const struct cmd cmds[] = {
	{ "set", cmd_key_value, 1, 2, 0, "KEY [VALUE|-]",
	  "Store VALUE under KEY (stdin when VALUE is '-' or missing)." },
	{ "get", cmd_get, 1, 1, O_NO_WAIT, "KEY [--no-wait] [--timeout S]",
	  "Print KEY's value raw. Waits for KEY like PyTorch's get() (exit 3\n"
	  "on timeout); with --no-wait a missing key exits 4 at once." },
	{ "add", cmd_add, 1, 2, 0, "KEY [N]",
	  "Add N (default 1, may be negative) to the counter KEY; print the\n"
	  "new value." },
	{ "compare-set", cmd_compare_set, 3, 3, 0, "KEY EXPECTED DESIRED",
	  "Set KEY to DESIRED if its value is EXPECTED (EXPECTED '' creates a\n"
	  "missing key); print the value after the operation." },
	{ "check", cmd_check, 1, -1, 0, "KEY...",
	  "Print true if all keys exist (exit 0), else false (exit 4)." },
	{ "wait", cmd_wait, 1, -1, O_WATCH | O_RECONNECT,
	  "KEY... [--timeout S] [--watch [--interval S]] [--reconnect S]",
	  "Wait until all keys exist (exit 3 on timeout). --watch reports the\n"
	  "missing keys and the elapsed time every --interval seconds\n"
	  "(default 1) on stderr (JSON lines on stdout with --json).\n"
	  "A watch survives a restart of the server: when the connection\n"
	  "breaks it reconnects (PyTorch's backoff, for at most --reconnect\n"
	  "seconds, default 60; 0 turns it off, 'none' never gives up),\n"
	  "says so, and waits on; the keys must then exist on the restarted\n"
	  "server. If it cannot reconnect in time it exits 2. --reconnect\n"
	  "also works without --watch." },
	{ "delete", cmd_delete, 1, 1, 0, "KEY",
	  "Delete KEY; print 1 if it existed (exit 0), else 0 (exit 4)." },
	{ "num-keys", cmd_num_keys, 0, 0, 0, "",
	  "Print the number of keys on the server (all namespaces)." },
	{ "append", cmd_key_value, 1, 2, 0, "KEY [VALUE|-]",
	  "Append VALUE to KEY's value, creating KEY if missing." },
	{ "multi-get", cmd_multi_get, 1, -1, 0, "KEY...",
	  "Wait for all keys, then print each value followed by a newline\n"
	  "(use --json for values that contain newlines or binary)." },
	{ "multi-set", cmd_multi_set, 2, -1, 0, "KEY VALUE [KEY VALUE...]",
	  "Set several keys in one request." },
	{ "queue-push", cmd_key_value, 1, 2, 0, "KEY [VALUE|-]",
	  "Push VALUE onto the tail of queue KEY." },
	{ "queue-pop", cmd_queue_pop, 1, 1, O_NO_BLOCK,
	  "KEY [--no-block] [--timeout S]",
	  "Pop the head of queue KEY and print it raw. Blocks until an item\n"
	  "arrives (exit 3 on timeout); with --no-block an empty queue exits 4." },
	{ "queue-len", cmd_queue_len, 1, 1, 0, "KEY",
	  "Print the length of queue KEY." },
	{ "list-keys", cmd_list_keys, 0, 0, 0, "",
	  "Print the keys, sorted, one per line. Like PyTorch's list_keys()\n"
	  "only keys with the '/' prefix are shown, without it; with --raw,\n"
	  "every key as stored." },
	{ "barrier", cmd_barrier, 2, 2, 0, "KEY WORLD_SIZE [--timeout S]",
	  "Arrive at barrier KEY and wait until WORLD_SIZE clients arrived\n"
	  "(exit 3 on timeout). The counter is never reset: use a new KEY." },
	{ "ping", cmd_ping, 0, 0, 0, "",
	  "Round-trip a PING; print the round-trip time in microseconds." },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(FILE *f)
{
	fputs("usage: ringstore-cli --addr HOST:PORT [--timeout S] "
	      "[--connect-timeout S]\n"
	      "                     [--raw] [--json] OP [ARGS...]\n"
	      "       ringstore-cli OP --help\n\n"
	      "Client for ringstore and PyTorch TCPStore servers. Keys get "
	      "PyTorch's '/'\nprefix (so Python's store.get(\"k\") sees "
	      "'ringstore-cli set k'), unless --raw.\n\n"
	      "options:\n"
	      "  --addr HOST:PORT     server address (default: $RINGSTORE_ADDR)\n"
	      "  --timeout S          timeout for waits, get, barrier, "
	      "blocking pop and\n"
	      "                       replies; seconds or 'none' (default "
	      "300, as PyTorch)\n"
	      "  --connect-timeout S  give up connecting after S seconds, "
	      "retrying with\n"
	      "                       backoff meanwhile (default 10)\n"
	      "  --control ADDR       the control plane, HOST:PORT or unix:PATH"
	      "\n                       (default: $RINGSTORE_CONTROL)\n"
	      "  --raw                send keys exactly as given (no '/' "
	      "prefix)\n"
	      "  --json               one JSON object per line on stdout\n"
	      "  -h, --help           this text\n\n"
	      "operations:\n",
	      f);
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].synopsis);
	fputc('\n', f);
	fputs(cli_control_help, f);
	fputc('\n', f);
	fputs(exit_help, f);
}

static void cmd_usage(FILE *f, const struct cmd *cmd)
{
	fprintf(f, "usage: ringstore-cli [OPTIONS] %s %s\n\n%s\n\n", cmd->name,
		cmd->synopsis, cmd->help);
	fputs(exit_help, f);
}

static const struct cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < NCMDS; i++)
		if (!strcmp(cmds[i].name, name))
			return &cmds[i];
	return NULL;
}

/* "--name=value" or "--name value": the value, advancing *i; NULL if none. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
	size_t n = strlen(name);

	if (!strncmp(argv[*i], name, n) && argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (strcmp(argv[*i], name))
		return NULL;
	if (*i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

static bool is_opt(const char *arg, const char *name)
{
	size_t n = strlen(name);

	return !strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=');
}

int main(int argc, char **argv)
{
	struct cli cl = { .timeout_ms = 300000, .interval_s = 1.0 };
	struct rs_options opts = { .connect_timeout_ms = 10000 };
	const char *addr = getenv("RINGSTORE_ADDR");
	const char *control = getenv("RINGSTORE_CONTROL");
	const char *v;
	int i, ret;

	for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return EXIT_OK;
		} else if (!strcmp(argv[i], "--raw")) {
			opts.flags |= RS_RAW_KEYS;
		} else if (!strcmp(argv[i], "--json")) {
			cl.json = true;
		} else if (is_opt(argv[i], "--addr")) {
			if (!(addr = opt_value(argc, argv, &i, "--addr")))
				goto bad_opt;
		} else if (is_opt(argv[i], "--control")) {
			if (!(control = opt_value(argc, argv, &i, "--control")))
				goto bad_opt;
		} else if (is_opt(argv[i], "--timeout")) {
			v = opt_value(argc, argv, &i, "--timeout");
			if (!v || parse_seconds(v, &cl.timeout_ms))
				goto bad_opt;
		} else if (is_opt(argv[i], "--connect-timeout")) {
			v = opt_value(argc, argv, &i, "--connect-timeout");
			if (!v || parse_seconds(v, &opts.connect_timeout_ms))
				goto bad_opt;
		} else {
			goto bad_opt;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[i], "help")) {
		const struct cmd *h = i + 1 < argc ? find_cmd(argv[i + 1])
						   : NULL;
		if (h)
			cmd_usage(stdout, h);
		else
			usage(stdout);
		return EXIT_OK;
	}
	if (cli_control_op(argv[i])) {
		if (!control) {
			fprintf(stderr,
				"ringstore-cli: %s needs the control "
				"plane's address (--control HOST:PORT|"
				"unix:PATH or $RINGSTORE_CONTROL)\n",
				argv[i]);
			return EXIT_USAGE;
		}
		return cli_control_run(control, argv[i], argc - i - 1,
				       argv + i + 1, cl.json,
				       opts.flags & RS_RAW_KEYS);
	}
	cl.cmd = find_cmd(argv[i]);
	if (!cl.cmd) {
		fprintf(stderr,
			"ringstore-cli: unknown operation '%s' (try "
			"--help)\n",
			argv[i]);
		return EXIT_USAGE;
	}

	/* Op arguments: options anywhere, "--" ends them; "-" is a value. */
	char **pos = calloc((size_t)argc, sizeof(*pos));
	int npos = 0;
	bool opts_done = false;
	if (!pos)
		return EXIT_SERVER;
	for (i++; i < argc; i++) {
		const char *a = argv[i];
		if (opts_done || a[0] != '-' || a[1] != '-') {
			pos[npos++] = argv[i];
		} else if (!strcmp(a, "--")) {
			opts_done = true;
		} else if (!strcmp(a, "--help")) {
			cmd_usage(stdout, cl.cmd);
			free(pos);
			return EXIT_OK;
		} else if (is_opt(a, "--timeout")) {
			v = opt_value(argc, argv, &i, "--timeout");
			if (!v || parse_seconds(v, &cl.timeout_ms))
				goto bad_sub;
		} else if (is_opt(a, "--interval") &&
			   (cl.cmd->opts & O_WATCH)) {
			int64_t ms;
			v = opt_value(argc, argv, &i, "--interval");
			if (!v || parse_seconds(v, &ms) || ms <= 0)
				goto bad_sub;
			cl.interval_s = (double)ms / 1e3;
		} else if (is_opt(a, "--reconnect") &&
			   (cl.cmd->opts & O_RECONNECT)) {
			v = opt_value(argc, argv, &i, "--reconnect");
			if (!v || parse_seconds(v, &cl.reconnect_ms))
				goto bad_sub;
			cl.flags |= O_RECONNECT;
		} else if (!strcmp(a, "--watch") && (cl.cmd->opts & O_WATCH)) {
			cl.flags |= O_WATCH;
		} else if (!strcmp(a, "--no-block") &&
			   (cl.cmd->opts & O_NO_BLOCK)) {
			cl.flags |= O_NO_BLOCK;
		} else if (!strcmp(a, "--no-wait") &&
			   (cl.cmd->opts & O_NO_WAIT)) {
			cl.flags |= O_NO_WAIT;
		} else {
			goto bad_sub;
		}
	}
	if (npos < cl.cmd->min_args ||
	    (cl.cmd->max_args >= 0 && npos > cl.cmd->max_args)) {
		free(pos);
		cmd_usage(stderr, cl.cmd);
		return EXIT_USAGE;
	}
	if (!addr) {
		free(pos);
		fprintf(stderr, "ringstore-cli: no server address (--addr "
				"HOST:PORT or $RINGSTORE_ADDR)\n");
		return EXIT_USAGE;
	}

	/* Reply reads share the op's timeout, but never less than 1 ms. */
	opts.timeout_ms = cl.timeout_ms == 0 ? 1 : cl.timeout_ms;
	if (!(cl.flags & O_RECONNECT) && (cl.flags & O_WATCH))
		cl.reconnect_ms = WATCH_RECONNECT_MS;
	if (cl.reconnect_ms) {
		opts.flags |= RS_RECONNECT;
		opts.reconnect_timeout_ms = cl.reconnect_ms;
	}
	ret = rs_connect_addr(&cl.c, addr, &opts);
	if (ret) {
		const struct cmd *cmd = cl.cmd;
		cl.cmd = NULL;
		fail(&cl, ret, addr);
		cl.cmd = cmd;
		free(pos);
		return ret == -EINVAL ? EXIT_USAGE : EXIT_CONNECT;
	}
	ret = cl.cmd->run(&cl, npos, pos);
	rs_close(cl.c);
	free(pos);
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "ringstore-cli: writing stdout failed\n");
		if (ret == EXIT_OK)
			ret = EXIT_SERVER;
	}
	return ret;

bad_opt:
	fprintf(stderr,
		"ringstore-cli: bad or incomplete option '%s' (try "
		"--help)\n",
		argv[i < argc ? i : argc - 1]);
	return EXIT_USAGE;
bad_sub:
	free(pos);
	fprintf(stderr,
		"ringstore-cli: %s: bad option '%s' (values starting "
		"with '--' go after '--')\n",
		cl.cmd->name, argv[i < argc ? i : argc - 1]);
	return EXIT_USAGE;
}
