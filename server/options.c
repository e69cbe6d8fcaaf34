/* SPDX-License-Identifier: MIT */
/*
 * options.c - the ringstore command line as one table.
 *
 * Each entry of table[] is a flag: its long name, its short letter, the kind
 * of argument it takes (enum opt_kind), the field of struct options it
 * fills, its range, its default and its help text; a SECTION entry is a
 * heading of --help. options_parse() builds getopt_long's array from the
 * table, applies every default through the same code as a given value (so a
 * default is range-checked and shown in --help from one place), then reads
 * argv. options_usage() prints the same table.
 *
 * To add a flag: a field in struct options (options.h) and an entry here.
 *  - a path: { "data-dir", 0, OPT_STRING, AT(data_dir), .metavar = "DIR",
 *    .help = "..." } (a const char * field; NULL when not given);
 *  - words: { "fsync", 0, OPT_WORD, ONE_OF(fsync, "always", "everysec",
 *    "no"), .def = "everysec", .metavar = "MODE", .help = "..." } (a
 *    uint32_t field that gets the word's index: an enum in that order);
 *  - a switch without an argument: { "repair", 0, OPT_FLAG, AT(repair),
 *    .help = "..." } (a bool field);
 *  - a size: { "compact-min-bytes", 0, OPT_SIZE, IN(compact_min_bytes, 0,
 *    UINT64_MAX, 1), .def = "64M", .metavar = "N", .help = "..." }.
 * The build fails if a range (or a list of words) does not fit its field's
 * type. Messages never say "ringstore:": main() adds it.
 *
 * Start-up only, on main()'s thread.
 */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "log.h"
#include "net.h"

enum opt_kind {
	OPT_SECTION, /* not a flag: a heading of --help */
	OPT_FLAG,    /* no argument: sets a bool */
	OPT_NUM,     /* a decimal number in [lo, hi], stored times .scale;
		      * its entry uses IN() */
	OPT_SIZE,    /* the same, with an optional K, M or G (powers of 1024) */
	OPT_ON_OFF,  /* 'on' or 'off': a bool */
	OPT_WORD,    /* one of .words: its index */
	OPT_STRING,  /* any text, borrowed from argv */
	OPT_LEVEL,   /* a log level, as log_parse_level() reads it */
	OPT_CIDR,    /* repeatable: each appends an address or ADDR/PREFIX to
		      * the array at .off, whose count is at .count_off */
};

/* The type of the field a flag fills: how a value is stored. */
enum opt_type {
	T_BOOL,
	T_U16,
	T_INT,
	T_U32,
	T_U64,
	T_I64,
	T_STR,
	T_CIDRS,
};

struct opt {
	const char *name; /* the long name, without "--"; a heading's text */
	char letter;      /* the short name, or 0 */
	uint8_t kind;     /* enum opt_kind */
	uint8_t type;     /* enum opt_type of the field at .off */
	size_t off;       /* offsetof(struct options, the field) */
	size_t count_off; /* OPT_CIDR: the uint32_t count's offset */
	uint64_t lo, hi;  /* OPT_NUM, OPT_SIZE: the range, as given;
			       * OPT_WORD: hi is the last word's index */
	uint32_t scale;   /* OPT_NUM, OPT_SIZE: the field gets value *
			       * scale (seconds given, milliseconds kept) */
	bool pow2;        /* OPT_NUM, OPT_SIZE: only powers of two */
	const char *const *words; /* OPT_WORD: the words, NULL-terminated */
	/* The default, read as if given and shown in --help; NULL: the field
	 * keeps its preset (see preset()), which .help describes. */
	const char *def;
	bool stop; /* --help, --version: the rest is not read */
	/* After the whole line, when this flag was given: a check involving
	 * other flags. 0, or -EINVAL with @err filled. */
	int (*check)(const struct options *o, struct options_error *err);
	const char *metavar; /* --help: the argument's name */
	const char *help;
};

#define FIELD(f) (((struct options *)0)->f)
#define TYPE_OF(f) \
	_Generic(FIELD(f), bool: T_BOOL, uint16_t: T_U16, int: T_INT,     \
		 uint32_t: T_U32, uint64_t: T_U64, int64_t: T_I64,         \
		 const char *: T_STR, struct net_cidr *: T_CIDRS)
#define TYPE_MAX(f)                           \
	_Generic(FIELD(f), bool : 1, uint16_t \
		 : UINT16_MAX, int            \
		 : INT_MAX, uint32_t          \
		 : UINT32_MAX, uint64_t       \
		 : UINT64_MAX, int64_t        \
		 : INT64_MAX)
/* 0, when @max fits in field @f's type; else the build fails. */
#define ASSERT_FITS(f, max)                                          \
	(0 * sizeof(struct {                                         \
		 _Static_assert((max) <= TYPE_MAX(f),                \
				"a flag's range exceeds its field"); \
		 char c;                                             \
	 }))

/* The field a flag fills. */
#define AT(f) .off = offsetof(struct options, f), .type = TYPE_OF(f)
/* A number in [lo, hi], stored times @scale (1: as given). */
#define IN(f, lo_, hi_, scale_)                \
	AT(f), .lo = (lo_), .scale = (scale_), \
	       .hi = (hi_) + ASSERT_FITS(f, (uint64_t)(hi_) * (scale_))
/* One of the words, stored as its index (the last one's is .hi). */
#define NWORDS(...) ARRAY_SIZE(((const char *[]){ __VA_ARGS__ }))
#define ONE_OF(f, ...)                                              \
	AT(f), .words = (const char *const[]){ __VA_ARGS__, NULL }, \
	       .hi = NWORDS(__VA_ARGS__) - 1 +                      \
		     ASSERT_FITS(f, NWORDS(__VA_ARGS__) - 1)
#define SECTION(text)                               \
	{                                           \
		.name = (text), .kind = OPT_SECTION \
	}

static int check_buf_min(const struct options *o, struct options_error *err);

static const struct opt table[] = {
	SECTION("Listening"),
	{ "port", 'p', OPT_NUM, IN(port, 0, 65535, 1), .def = "29500",
	  .metavar = "N", .help = "TCP port; 0 picks a free one" },
	{ "bind", 'b', OPT_STRING, AT(bind), .metavar = "ADDR",
	  .help = "address to bind (default '::' dual-stack, falling back "
		  "to 0.0.0.0)" },
	{ "listen-fd", 0, OPT_NUM, IN(listen_fd, 0, INT_MAX, 1), .metavar = "N",
	  .help = "serve TCP socket N instead, listening on it if it is only "
		  "bound (like PyTorch's master_listen_fd); systemd socket "
		  "activation (LISTEN_FDS) is automatic" },
	{ "backlog", 0, OPT_NUM, IN(backlog, 1, INT_MAX, 1), .metavar = "N",
	  .help = "listen backlog (default: the kernel maximum)" },

	SECTION("Threads and I/O"),
	{ "threads", 't', OPT_NUM, IN(cfg.threads, 1, 256, 1), .metavar = "N",
	  .help = "reactor threads, one event loop each (default: half the "
		  "CPUs this process may use: its affinity mask, within its "
		  "cgroup's CPU quota; at least 1, at most 64)" },
	{ "io", 0, OPT_WORD, ONE_OF(io, "auto", "uring", "epoll"),
	  .def = "auto", .metavar = "MODE",
	  .help = "'auto': io_uring where the kernel has what ringstore uses "
		  "and allows it, else epoll (the reason is logged); 'uring': "
		  "fail where io_uring cannot run; 'epoll'" },
	{ "accept", 0, OPT_WORD,
	  ONE_OF(cfg.single_acceptor, "reuseport", "single"),
	  .def = "reuseport", .metavar = "MODE",
	  .help = "'reuseport': a listener per reactor, the kernel spreads "
		  "connections; 'single': reactor 0 accepts and hands them "
		  "out" },

	SECTION("Limits (a request over a limit closes its connection; sizes "
		"take K/M/G)"),
	{ "max-key-bytes", 0, OPT_NUM, IN(cfg.limits.max_key, 1, UINT32_MAX, 1),
	  .def = "8192", .metavar = "N", .help = "longest key" },
	{ "max-value-bytes", 0, OPT_SIZE,
	  IN(cfg.limits.max_value, 0, UINT32_MAX, 1), .def = "8M",
	  .metavar = "N", .help = "longest value" },
	{ "max-keys-per-request", 0, OPT_NUM,
	  IN(cfg.limits.max_keys, 1, UINT32_MAX, 1), .def = "131072",
	  .metavar = "N", .help = "keys in CHECK/WAIT/MULTI_*" },
	{ "max-request-bytes", 0, OPT_SIZE,
	  IN(cfg.limits.max_request, 64, UINT64_MAX / 2, 1), .def = "64M",
	  .metavar = "N",
	  .help = "whole request, also the cap on the bytes of a request "
		  "still arriving" },
	{ "max-memory", 0, OPT_SIZE, IN(max_memory, 0, UINT64_MAX, 1),
	  .metavar = "N",
	  .help = "stored keys, values and queue items; a write past it "
		  "closes its connection (default: none)" },
	{ "max-output-bytes", 0, OPT_SIZE,
	  IN(cfg.max_output, 4096, UINT64_MAX, 1), .def = "256M",
	  .metavar = "N",
	  .help = "replies waiting for one client before it is closed as too "
		  "slow a reader" },
	{ "max-connections", 0, OPT_NUM, IN(cfg.max_conns, 0, UINT32_MAX, 1),
	  .metavar = "N",
	  .help = "open client connections; more are closed at accept "
		  "(default: none beyond the fd limit)" },
	{ "handshake-timeout", 0, OPT_NUM, IN(cfg.handshake_ms, 0, 86400, 1000),
	  .def = "10", .metavar = "S",
	  .help = "seconds a new connection has to send VALIDATE; 0: no "
		  "limit" },
	{ "allow", 0, OPT_CIDR, AT(cfg.allow),
	  .count_off = offsetof(struct options, cfg.nallow), .metavar = "CIDR",
	  .help = "accept clients only from these networks (repeatable; "
		  "default: everyone)" },
	{ "keepalive", 0, OPT_NUM, IN(keepalive, 0, 32767, 1), .def = "60",
	  .metavar = "S",
	  .help = "TCP keepalive: probe a client silent for S seconds, close "
		  "it after 4 unanswered probes; 0: off" },

	SECTION("Tuning"),
	{ "recv-buffers", 0, OPT_NUM, IN(cfg.buf_count, 16, 32768, 1),
	  .pow2 = true, .def = "1024", .metavar = "N",
	  .help = "receive buffers per thread, a power of two" },
	{ "recv-buffers-min", 0, OPT_NUM, IN(cfg.buf_min, 1, 32768, 1),
	  .def = "64", .check = check_buf_min, .metavar = "N",
	  .help = "io_uring: the fewest of them kept provided to the kernel; "
		  "the ring holds as many as the receives per batch need, so "
		  "it cycles through buffers still in cache; equal to "
		  "--recv-buffers: all of them, always" },
	{ "recv-buffer-size", 0, OPT_NUM, IN(cfg.buf_size, 512, 1 << 20, 1),
	  .def = "16384", .metavar = "N", .help = "bytes per receive buffer" },
	{ "initial-keys", 0, OPT_NUM, IN(initial_keys, 16, 1u << 30, 1),
	  .def = "1024", .metavar = "N", .help = "table slots to start with" },
	{ "mget-cache", 0, OPT_ON_OFF, AT(mget_cache), .def = "on",
	  .metavar = "on|off",
	  .help = "answer a repeated identical MULTI_GET of 64 or more keys "
		  "from a per-thread reply cache while nothing is written" },
	{ "fixed-files", 0, OPT_ON_OFF, AT(cfg.fixed_files), .def = "off",
	  .metavar = "on|off",
	  .help = "io_uring: register each client socket with the ring so "
		  "sends skip a file lookup; no measured gain on loopback" },
	{ "spread-sends", 0, OPT_NUM, IN(spread_sends, 0, UINT32_MAX, 1),
	  .metavar = "N",
	  .help = "past N sends in one batch (a SET waking thousands of "
		  "WAITs), every other one is made on another CPU: by the "
		  "ring's kernel worker, or on epoll by a helper thread per "
		  "reactor (default 256 when there are more CPUs than "
		  "reactors, else 0: never)" },

	SECTION("Durability (a write log; off by default: the store is in "
		"memory only)"),
	{ "data-dir", 0, OPT_STRING, AT(data_dir), .metavar = "DIR",
	  .help = "log every change to DIR and replay it at start-up, before "
		  "listening (created if missing; one server per directory)" },
	{ "fsync", 0, OPT_WORD, ONE_OF(fsync, "always", "everysec", "no"),
	  .def = "everysec", .metavar = "MODE",
	  .help = "'always': a reply leaves only once the writes before it "
		  "are on disk (one sync per loop pass); 'everysec': synced "
		  "once a second, a crash loses at most about a second; 'no': "
		  "the kernel decides when" },
	{ "repair-log", 0, OPT_FLAG, AT(repair_log),
	  .help = "start even if a log is damaged before its end: keep the "
		  "records before the damage, move the rest aside "
		  "(<log>.damaged-OFFSET)" },
	{ "compact-min-bytes", 0, OPT_SIZE,
	  IN(compact_min_bytes, 4096, UINT64_MAX, 1), .def = "64M",
	  .metavar = "N",
	  .help = "rewrite the log as a snapshot once it holds N bytes and "
		  "twice the live data" },

	SECTION("Control plane (HTTP: /health, /metrics, /handler/<name>; off "
		"by default)"),
	{ "control-port", 0, OPT_NUM, IN(control_port, 0, 65535, 1),
	  .metavar = "N",
	  .help = "serve it on TCP port N (0 picks a free one)" },
	{ "control-bind", 0, OPT_STRING, AT(control_bind), .def = "127.0.0.1",
	  .metavar = "ADDR", .help = "its address" },
	{ "control-socket", 0, OPT_STRING, AT(control_socket),
	  .metavar = "PATH", .help = "serve it on a Unix socket instead" },
	{ "control-idle-timeout", 0, OPT_NUM,
	  IN(cfg.control_idle_ms, 0, 86400, 1000), .def = "60", .metavar = "S",
	  .help = "close a control client idle for S seconds (0: never); at "
		  "most 64 are served at once" },

	SECTION("Other"),
	{ "idle-exit", 0, OPT_NUM, IN(idle_exit_s, 0, 86400 * 365, 1),
	  .def = "0", .metavar = "S",
	  .help = "exit (as on SIGTERM) once no store client has been "
		  "connected for S seconds; 0: never. What a torchrun agent "
		  "passes to a store it starts for its job" },
	{ "log-level", 'l', OPT_LEVEL, AT(log_level), .def = "info",
	  .metavar = "LEVEL", .help = "error, warn, info or debug" },
	{ "help", 'h', OPT_FLAG, AT(help), .stop = true, .help = "this text" },
	{ "version", 'V', OPT_FLAG, AT(version), .stop = true,
	  .help = "print the version" },
};

#define NOPTS ARRAY_SIZE(table)
/* getopt_long's value for table[i]: above every short letter. */
#define OPT_VAL_BASE 256

/* The fields whose default is not one value of the flag's kind: a preset
 * that main() resolves (or, where it is 0 or NULL, leaves as it is). */
static void preset(struct options *o)
{
	*o = (struct options){ .listen_fd = -1,
			       .backlog = -1,
			       .control_port = -1,
			       .spread_sends = -1 };
}

static int fail(struct options_error *err, bool usage, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct options_error *err, bool usage, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->usage = usage;
	return -EINVAL;
}

static int check_buf_min(const struct options *o, struct options_error *err)
{
	/* The default minimum follows a smaller --recv-buffers (recvbufs.c);
	 * one given explicitly must fit in the ring. */
	if (o->cfg.buf_min <= o->cfg.buf_count)
		return 0;
	return fail(err, false,
		    "--recv-buffers-min %u exceeds --recv-buffers %u; give at "
		    "most %u (equal: a fixed ring)",
		    o->cfg.buf_min, o->cfg.buf_count, o->cfg.buf_count);
}

/*
 * A decimal number, with an optional K, M or G suffix (powers of 1024)
 * where @suffixes, into *@v. -EINVAL for anything else (a sign, a space,
 * nothing) and -ERANGE past UINT64_MAX.
 */
static int parse_number(const char *s, bool suffixes, uint64_t *v)
{
	unsigned long long n;
	unsigned shift = 0;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	if (suffixes && end[0] && !end[1]) {
		const char *units = "KMG";
		const char *u = strchr(units, end[0] & ~0x20);

		if (u) {
			shift = 10 * (unsigned)(u - units + 1);
			end++;
		}
	}
	if (*end)
		return -EINVAL;
	if (n > (UINT64_MAX >> shift))
		return -ERANGE;
	*v = (uint64_t)n << shift;
	return 0;
}

static void store(struct options *o, const struct opt *e, uint64_t v)
{
	void *p = (char *)o + e->off;

	switch ((enum opt_type)e->type) {
	case T_BOOL:
		*(bool *)p = v;
		break;
	case T_U16:
		*(uint16_t *)p = (uint16_t)v;
		break;
	case T_INT:
		*(int *)p = (int)v;
		break;
	case T_U32:
		*(uint32_t *)p = (uint32_t)v;
		break;
	case T_U64:
		*(uint64_t *)p = v;
		break;
	case T_I64:
		*(int64_t *)p = (int64_t)v;
		break;
	case T_STR:
	case T_CIDRS:
		break;
	}
}

/* "'a', 'b' or 'c'" for @words, into @out. */
static void list_words(const char *const *words, char *out, size_t len)
{
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; words[i] && n < len; i++)
		n += (size_t)snprintf(out + n, len - n, "%s'%s'",
				      !i             ? ""
				      : words[i + 1] ? ", "
						     : " or ",
				      words[i]);
}

static int add_cidr(struct options *o, const struct opt *e, const char *s,
		    struct options_error *err)
{
	struct net_cidr **arr = (struct net_cidr **)((char *)o + e->off);
	uint32_t *n = (uint32_t *)((char *)o + e->count_off);
	struct net_cidr *a = realloc(*arr, (*n + 1) * sizeof(*a));

	if (!a) {
		snprintf(err->msg, sizeof(err->msg), "out of memory");
		err->usage = false;
		return -ENOMEM;
	}
	*arr = a;
	if (net_parse_cidr(s, &a[*n]))
		return fail(err, false,
			    "--%s wants an address or "
			    "ADDR/PREFIX, not '%s'",
			    e->name, s);
	(*n)++;
	return 0;
}

/* Read @arg (NULL for OPT_FLAG) as flag @e's value into @o. */
static int apply(struct options *o, const struct opt *e, const char *arg,
		 struct options_error *err)
{
	char words[128];
	uint64_t v = 1;
	int lvl;

	switch ((enum opt_kind)e->kind) {
	case OPT_SECTION:
	case OPT_FLAG:
		break;
	case OPT_NUM:
	case OPT_SIZE:
		if (parse_number(arg, e->kind == OPT_SIZE, &v) || v < e->lo ||
		    v > e->hi)
			return fail(err, false,
				    "--%s wants a number from %" PRIu64
				    " to %" PRIu64 ", not '%s'",
				    e->name, e->lo, e->hi, arg);
		if (e->pow2 && (v & (v - 1)))
			return fail(err, false, "--%s must be a power of two",
				    e->name);
		v *= e->scale;
		break;
	case OPT_ON_OFF:
		if (strcmp(arg, "on") && strcmp(arg, "off"))
			return fail(err, false, "--%s wants 'on' or 'off'",
				    e->name);
		v = !strcmp(arg, "on");
		break;
	case OPT_WORD:
		for (v = 0; e->words[v] && strcmp(arg, e->words[v]); v++)
			;
		if (!e->words[v]) {
			list_words(e->words, words, sizeof(words));
			return fail(err, false, "--%s wants %s", e->name,
				    words);
		}
		break;
	case OPT_LEVEL:
		lvl = log_parse_level(arg);
		if (lvl < 0)
			return fail(err, false, "unknown log level '%s'", arg);
		v = (uint64_t)lvl;
		break;
	case OPT_STRING:
		*(const char **)((char *)o + e->off) = arg;
		return 0;
	case OPT_CIDR:
		return add_cidr(o, e, arg, err);
	}
	store(o, e, v);
	return 0;
}

/* getopt_long's array and short-option string for the table. */
static void getopt_tables(struct option *longopts, char *shortopts)
{
	size_t n = 0, s = 0;

	shortopts[s++] = ':'; /* a missing argument returns ':', not '?' */
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *e = &table[i];
		int has_arg = e->kind == OPT_FLAG ? no_argument
						  : required_argument;

		if (e->kind == OPT_SECTION)
			continue;
		longopts[n++] = (struct option){ e->name, has_arg, NULL,
						 OPT_VAL_BASE + (int)i };
		if (e->letter) {
			shortopts[s++] = e->letter;
			if (has_arg == required_argument)
				shortopts[s++] = ':';
		}
	}
	longopts[n] = (struct option){ 0 };
	shortopts[s] = '\0';
}

/* The entry getopt_long's @val stands for: a short letter or a table
 * index; NULL if none. */
static const struct opt *entry_of(int val)
{
	if (val >= OPT_VAL_BASE && val < OPT_VAL_BASE + (int)NOPTS)
		return &table[val - OPT_VAL_BASE];
	for (size_t i = 0; val > 0 && i < NOPTS; i++)
		if (table[i].kind != OPT_SECTION && table[i].letter == val)
			return &table[i];
	return NULL;
}

/* The long names that begin with --@word's (up to an '='), listed in
 * @out; how many. */
static unsigned names_prefixed(const char *word, char *out, size_t len)
{
	size_t n = 0, wlen = strcspn(word + 2, "=");
	unsigned count = 0;

	out[0] = '\0';
	for (size_t i = 0; i < NOPTS; i++) {
		if (table[i].kind == OPT_SECTION ||
		    strncmp(table[i].name, word + 2, wlen))
			continue;
		if (n < len)
			n += (size_t)snprintf(out + n, len - n, "%s--%s",
					      count ? ", " : "", table[i].name);
		count++;
	}
	return count;
}

/*
 * Why getopt_long refused a word (it returned @c): a missing value (':'),
 * an unknown or ambiguous long name (optopt 0; the word is argv[optind -
 * 1]), a value given to a flag that takes none (optopt is the flag), or
 * an unknown short letter (optopt).
 */
static int refuse(int c, char **argv, struct options_error *err)
{
	const struct opt *e = entry_of(optopt);
	const char *word = argv[optind - 1];
	char names[sizeof(err->msg)];

	if (c == ':' && e && !strncmp(word, "--", 2))
		return fail(err, true, "--%s wants a value", e->name);
	if (c == ':')
		return fail(err, true, "-%c wants a value", optopt);
	if (e)
		return fail(err, true, "--%s takes no value", e->name);
	if (optopt)
		return fail(err, true, "unknown option '-%c'", optopt);
	if (names_prefixed(word, names, sizeof(names)) > 1)
		return fail(err, true, "ambiguous option '%s': %s", word,
			    names);
	return fail(err, true, "unrecognized option '%s'", word);
}

int options_parse(struct options *o, int argc, char **argv,
		  struct options_error *err)
{
	struct option longopts[NOPTS + 1];
	char shortopts[2 * NOPTS + 2];
	bool given[NOPTS] = { false };
	int c, ret;

	preset(o);
	for (size_t i = 0; i < NOPTS; i++) {
		if (!table[i].def)
			continue;
		ret = apply(o, &table[i], table[i].def, err);
		if (ret)
			return ret;
	}
	getopt_tables(longopts, shortopts);
	optind = 0; /* glibc: start afresh, so a second parse works */
	opterr = 0; /* the messages are ours, in @err */
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		const struct opt *e = c == '?' || c == ':' ? NULL : entry_of(c);

		if (!e)
			return refuse(c, argv, err);
		ret = apply(o, e, optarg, err);
		if (ret)
			return ret;
		if (e->stop)
			return 0;
		given[e - table] = true;
	}
	if (optind < argc)
		return fail(err, true, "unexpected argument '%s'",
			    argv[optind]);
	for (size_t i = 0; i < NOPTS; i++) {
		if (given[i] && table[i].check) {
			ret = table[i].check(o, err);
			if (ret)
				return ret;
		}
	}
	return 0;
}

void options_free(struct options *o)
{
	free(o->cfg.allow);
	o->cfg.allow = NULL;
	o->cfg.nallow = 0;
}

#define HELP_COL 28   /* where help text starts */
#define HELP_WIDTH 76 /* the longest line */

/* @left, then @text word-wrapped in the column from HELP_COL. */
static void print_wrapped(FILE *f, const char *left, const char *text)
{
	int col = fprintf(f, "%s", left);
	/* A left part as wide as the column gets a gap of two. */
	int at = col + (col < HELP_COL ? HELP_COL - col : 2);

	fprintf(f, "%*s", at - col, "");
	col = at;
	for (const char *p = text; *p;) {
		int w = (int)strcspn(p, " ");

		if (col > at && col + 1 + w > HELP_WIDTH) {
			fprintf(f, "\n%*s", HELP_COL, "");
			col = at = HELP_COL;
		} else if (col > at) {
			fputc(' ', f);
			col++;
		}
		col += fprintf(f, "%.*s", w, p);
		p += w;
		p += strspn(p, " ");
	}
	fputc('\n', f);
}

void options_usage(FILE *f)
{
	char left[64], text[1024];

	fputs("Usage: ringstore [options]\n"
	      "A wire-compatible replacement for PyTorch's c10d TCPStore "
	      "server.\n"
	      "Point torch.distributed.TCPStore(host, port, is_master=False) "
	      "at it.\n\n",
	      f);
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *e = &table[i];

		if (e->kind == OPT_SECTION) {
			fprintf(f, "%s:\n", e->name);
			continue;
		}
		snprintf(left, sizeof(left), "  %c%c%c --%s%s%s",
			 e->letter ? '-' : ' ', e->letter ? e->letter : ' ',
			 e->letter ? ',' : ' ', e->name, e->metavar ? " " : "",
			 e->metavar ? e->metavar : "");
		snprintf(text, sizeof(text), "%s%s%s%s", e->help,
			 e->def ? " (default " : "", e->def ? e->def : "",
			 e->def ? ")" : "");
		print_wrapped(f, left, text);
	}
	fputs("\nThe listening address is printed on stdout as 'ringstore "
	      "listening on\nADDR:PORT'; logs go to stderr. SIGINT or SIGTERM "
	      "stops the server.\n",
	      f);
}
