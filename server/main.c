/* SPDX-License-Identifier: MIT */
/*
 * main.c - the ringstore binary: options, listening sockets, signals, and
 * starting and joining the reactors. Nothing else lives here.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cpus.h"
#include "io.h"
#include "listen.h"
#include "log.h"
#include "net.h"
#include "reactor.h"
#include "recvbufs.h"
#include "server.h"
#include "stats.h"
#include "store.h"
#include "wal.h"

/* sysexits.h's EX_DATAERR: the data directory is damaged (--repair-log). */
#define EXIT_DATA_DAMAGED 65

#ifndef RS_VERSION
#define RS_VERSION "0.0.0"
#endif

struct options {
	const char *bind;
	uint16_t port;
	int listen_fd;
	int backlog;
	size_t initial_keys;
	uint64_t max_memory;
	int keepalive;              /* TCP keepalive idle seconds; 0: off */
	int control_port;           /* -1: no TCP control listener */
	const char *control_bind;
	const char *control_socket; /* Unix socket path, or NULL */
	const char *io;             /* "auto", "uring" or "epoll" */
	bool mget_cache;            /* --mget-cache on|off */
	int64_t spread_sends;       /* --spread-sends; -1: default_spread */
	struct wal_config wal;      /* --data-dir etc.; dir NULL: no log */
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: ringstore [options]\n"
"A wire-compatible replacement for PyTorch's c10d TCPStore server.\n"
"Point torch.distributed.TCPStore(host, port, is_master=False) at it.\n"
"\n"
"Listening:\n"
"  -p, --port N              TCP port (default 29500; 0 picks a free one)\n"
"  -b, --bind ADDR           address to bind (default '::' dual-stack,\n"
"                            falling back to 0.0.0.0)\n"
"      --listen-fd N         serve TCP socket N instead, listening on it if\n"
"                            it is only bound (like PyTorch's\n"
"                            master_listen_fd); systemd socket activation\n"
"                            (LISTEN_FDS) is automatic\n"
"      --backlog N           listen backlog (default: the kernel maximum)\n"
"Threads and I/O:\n"
"  -t, --threads N           reactor threads, one event loop each (default:\n"
"                            half the CPUs this process may use: its\n"
"                            affinity mask, within its cgroup's CPU quota;\n"
"                            at least 1, at most 64)\n"
"      --io MODE             'auto' (default): io_uring where the kernel\n"
"                            has what ringstore uses and allows it, else\n"
"                            epoll (the reason is logged); 'uring': fail\n"
"                            where io_uring cannot run; 'epoll'\n"
"      --accept MODE         'reuseport' (default): a listener per reactor,\n"
"                            the kernel spreads connections; 'single':\n"
"                            reactor 0 accepts and hands them out\n"
"Limits (a request over a limit closes its connection; sizes take K/M/G):\n"
"      --max-key-bytes N     longest key (default 8192)\n"
"      --max-value-bytes N   longest value (default 8M)\n"
"      --max-keys-per-request N  keys in CHECK/WAIT/MULTI_* (default 131072)\n"
"      --max-request-bytes N whole request, also the cap on the bytes of a\n"
"                            request still arriving (default 64M)\n"
"      --max-memory N        stored keys, values and queue items; a write\n"
"                            past it closes its connection (default: none)\n"
"      --max-output-bytes N  replies waiting for one client before it is\n"
"                            closed as too slow a reader (default 256M)\n"
"      --max-connections N   open client connections; more are closed at\n"
"                            accept (default: none beyond the fd limit)\n"
"      --handshake-timeout S seconds a new connection has to send VALIDATE\n"
"                            (default 10; 0: no limit)\n"
"      --allow CIDR          accept clients only from these networks\n"
"                            (repeatable; default: everyone)\n"
"      --keepalive S         TCP keepalive: probe a client silent for S\n"
"                            seconds, close it after 4 unanswered probes\n"
"                            (default 60; 0: off)\n"
"Tuning:\n"
"      --recv-buffers N      receive buffers per thread, a power of two\n"
"                            (default 1024)\n"
"      --recv-buffers-min N  io_uring: the fewest of them kept provided to\n"
"                            the kernel; the ring holds as many as the\n"
"                            receives per batch need, so it cycles through\n"
"                            buffers still in cache (default 64; equal to\n"
"                            --recv-buffers: all of them, always)\n"
"      --recv-buffer-size N  bytes per receive buffer (default 16384)\n"
"      --initial-keys N      table slots to start with (default 1024)\n"
"      --mget-cache on|off   answer a repeated identical MULTI_GET of 64 or\n"
"                            more keys from a per-thread reply cache while\n"
"                            nothing is written (default on)\n"
"      --fixed-files on|off  io_uring: register each client socket with the\n"
"                            ring so sends skip a file lookup (default off:\n"
"                            no measured gain on loopback)\n"
"      --spread-sends N      past N sends in one batch (a SET waking\n"
"                            thousands of WAITs), every other one is made\n"
"                            on another CPU: by the ring's kernel worker, or\n"
"                            on epoll by a helper thread per reactor\n"
"                            (default 256 when there are more CPUs than\n"
"                            reactors, else 0: never)\n"
"Durability (a write log; off by default: the store is in memory only):\n"
"      --data-dir DIR        log every change to DIR and replay it at start-up\n"
"                            (created if missing; one server per directory)\n"
"      --fsync MODE          'everysec' (default): the log is synced once a\n"
"                            second, a crash loses at most about a second;\n"
"                            'always': a reply leaves only once the writes\n"
"                            before it are on disk (one sync per loop pass);\n"
"                            'no': the kernel decides when\n"
"      --repair-log          start even if a log is damaged before its end:\n"
"                            keep the records before the damage, move the\n"
"                            rest aside (<log>.damaged-OFFSET)\n"
"      --compact-min-bytes N rewrite the log as a snapshot once it holds N\n"
"                            bytes and twice the live data (default 64M)\n"
"Control plane (HTTP: /health, /metrics, /handler/<name>; off by default):\n"
"      --control-port N      serve it on TCP port N (0 picks a free one)\n"
"      --control-bind ADDR   its address (default 127.0.0.1)\n"
"      --control-socket PATH serve it on a Unix socket instead\n"
"      --control-idle-timeout S  close a control client idle for S seconds\n"
"                            (default 60; 0: never); at most 64 at once\n"
"Other:\n"
"  -l, --log-level LEVEL     error, warn, info (default) or debug\n"
"  -h, --help                this text\n"
"  -V, --version             print the version\n"
"\n"
"The listening address is printed on stdout as 'ringstore listening on\n"
"ADDR:PORT'; logs go to stderr. SIGINT or SIGTERM stops the server.\n");
}

/*
 * listen_open, waiting up to LISTEN_WAIT_MS while the port is held by a
 * listener that no process owns. That is most likely a server that has just
 * died (a crash, SIGKILL): the kernel closes the sockets of an exited
 * process's io_uring rings in the background, which with thousands of
 * connections takes a few hundred milliseconds, whereas PyTorch's servers
 * close theirs as they exit, so a restart of theirs finds the port free. A
 * port that a live process holds fails at once, as PyTorch's does. After
 * the wait, @who names the orphan as the holder.
 */
#define LISTEN_WAIT_MS 3000

static int listen_wait(struct options *o, uint32_t n, int *fds, char *who,
		       size_t wholen)
{
	for (int waited = 0;; waited += 50) {
		int ret = listen_open(o->bind, &o->port, o->backlog, n, fds,
				      who, wholen);

		if (ret != -EADDRINUSE || who[0])
			return ret;
		if (waited >= LISTEN_WAIT_MS) {
			snprintf(who, wholen,
				 "a socket that no process here owns, "
				 "still after %d s", LISTEN_WAIT_MS / 1000);
			return ret;
		}
		if (!waited)
			log_warn("port %u is held by a socket that no process "
				 "here owns (a server that has just exited?); "
				 "waiting up to %d s for it to close",
				 o->port, LISTEN_WAIT_MS / 1000);
		usleep(50 * 1000);
	}
}

/*
 * One reactor per two CPUs that this process may use (cpus_usable: its
 * affinity mask, within its cgroup's CPU quota), at least 1 and at most 64.
 * A reactor per CPU competes with the kernel's network processing and with
 * the processes on the host for every CPU: on 2 CPUs shared with their
 * clients, two reactors cost up to 25 % more CPU per operation than one and
 * up to 3x the p99 latency, and as much under a quota of one CPU
 * (bench/RESULTS.md). On a 64-CPU node with a CPU limit of 4, the mask alone
 * would start 32 reactors on 4 CPUs' worth of time.
 */
static uint32_t default_threads(unsigned usable)
{
	unsigned n = usable / 2;

	return n < 1 ? 1 : n > 64 ? 64 : n;
}

/*
 * --spread-sends's default: spread past SPREAD_SENDS_DEFAULT sends in one
 * batch when some CPU of the affinity mask runs no reactor (the kernel
 * worker, or epoll's helper thread, needs one to be of use), else never. A batch has at most one send
 * per connection, so only a burst over hundreds of connections reaches it;
 * the benchmark's throughput workloads rarely do (bench/RESULTS.md). The
 * mask, not the quota, decides: a burst of 100 ms runs on both CPUs within
 * a quota of one CPU (a 16k fanout took 0.81x the time spread there).
 */
#define SPREAD_SENDS_DEFAULT 256

static uint32_t default_spread(unsigned affinity, uint32_t threads)
{
	return affinity > threads ? SPREAD_SENDS_DEFAULT : 0;
}

/*
 * Parse a decimal number in [lo, hi], with an optional K, M or G suffix
 * (powers of 1024) where @suffixes; exits with a message on error.
 */
static uint64_t parse_numx(const char *opt, const char *s, uint64_t lo,
			   uint64_t hi, bool suffixes)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;

	if (suffixes && end != s && end[0] && !end[1]) {
		const char *units = "KMG";
		const char *u = strchr(units, end[0] & ~0x20);
		if (u) {
			shift = 10 * (unsigned)(u - units + 1);
			end++;
		}
	}
	if (shift && v > (UINT64_MAX >> shift))
		errno = ERANGE;
	v <<= shift;
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
		fprintf(stderr,
			"ringstore: --%s wants a number from %" PRIu64
			" to %" PRIu64 ", not '%s'\n",
			opt, lo, hi, s);
		exit(2);
	}
	return v;
}

/* "on" or "off" for --@opt; exits with a message otherwise. */
static bool parse_on_off(const char *opt, const char *s)
{
	if (strcmp(s, "on") && strcmp(s, "off")) {
		fprintf(stderr, "ringstore: --%s wants 'on' or 'off'\n", opt);
		exit(2);
	}
	return !strcmp(s, "on");
}

static uint64_t parse_num(const char *opt, const char *s, uint64_t lo,
			  uint64_t hi)
{
	return parse_numx(opt, s, lo, hi, false);
}

static uint64_t parse_size(const char *opt, const char *s, uint64_t lo,
			   uint64_t hi)
{
	return parse_numx(opt, s, lo, hi, true);
}

static void add_allow(struct server_config *cfg, const char *s)
{
	struct net_cidr *a = realloc(cfg->allow,
				     (cfg->nallow + 1) * sizeof(*a));

	if (!a) {
		fprintf(stderr, "ringstore: out of memory\n");
		exit(1);
	}
	cfg->allow = a;
	if (net_parse_cidr(s, &a[cfg->nallow])) {
		fprintf(stderr, "ringstore: --allow wants an address or "
				"ADDR/PREFIX, not '%s'\n", s);
		exit(2);
	}
	cfg->nallow++;
}

enum {
	OPT_LISTEN_FD = 256,
	OPT_BACKLOG,
	OPT_MAX_KEY,
	OPT_MAX_VALUE,
	OPT_MAX_KEYS,
	OPT_MAX_REQUEST,
	OPT_RECV_BUFFERS,
	OPT_RECV_BUFFERS_MIN,
	OPT_RECV_BUFFER_SIZE,
	OPT_INITIAL_KEYS,
	OPT_MAX_CONNS,
	OPT_MAX_MEMORY,
	OPT_MAX_OUTPUT,
	OPT_HANDSHAKE_TIMEOUT,
	OPT_ALLOW,
	OPT_ACCEPT,
	OPT_CONTROL_PORT,
	OPT_CONTROL_BIND,
	OPT_CONTROL_SOCKET,
	OPT_KEEPALIVE,
	OPT_CONTROL_IDLE,
	OPT_IO,
	OPT_MGET_CACHE,
	OPT_FIXED_FILES,
	OPT_SPREAD_SENDS,
	OPT_DATA_DIR,
	OPT_FSYNC,
	OPT_REPAIR_LOG,
	OPT_COMPACT_MIN,
};

static void parse_args(int argc, char **argv, struct options *o,
		       struct server_config *cfg)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 't' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "listen-fd", required_argument, NULL, OPT_LISTEN_FD },
		{ "backlog", required_argument, NULL, OPT_BACKLOG },
		{ "max-key-bytes", required_argument, NULL, OPT_MAX_KEY },
		{ "max-value-bytes", required_argument, NULL, OPT_MAX_VALUE },
		{ "max-keys-per-request", required_argument, NULL,
		  OPT_MAX_KEYS },
		{ "max-request-bytes", required_argument, NULL,
		  OPT_MAX_REQUEST },
		{ "recv-buffers", required_argument, NULL, OPT_RECV_BUFFERS },
		{ "recv-buffers-min", required_argument, NULL,
		  OPT_RECV_BUFFERS_MIN },
		{ "recv-buffer-size", required_argument, NULL,
		  OPT_RECV_BUFFER_SIZE },
		{ "initial-keys", required_argument, NULL, OPT_INITIAL_KEYS },
		{ "max-connections", required_argument, NULL, OPT_MAX_CONNS },
		{ "max-memory", required_argument, NULL, OPT_MAX_MEMORY },
		{ "max-output-bytes", required_argument, NULL, OPT_MAX_OUTPUT },
		{ "handshake-timeout", required_argument, NULL,
		  OPT_HANDSHAKE_TIMEOUT },
		{ "allow", required_argument, NULL, OPT_ALLOW },
		{ "accept", required_argument, NULL, OPT_ACCEPT },
		{ "control-port", required_argument, NULL, OPT_CONTROL_PORT },
		{ "control-bind", required_argument, NULL, OPT_CONTROL_BIND },
		{ "control-socket", required_argument, NULL,
		  OPT_CONTROL_SOCKET },
		{ "keepalive", required_argument, NULL, OPT_KEEPALIVE },
		{ "control-idle-timeout", required_argument, NULL,
		  OPT_CONTROL_IDLE },
		{ "io", required_argument, NULL, OPT_IO },
		{ "mget-cache", required_argument, NULL, OPT_MGET_CACHE },
		{ "fixed-files", required_argument, NULL, OPT_FIXED_FILES },
		{ "spread-sends", required_argument, NULL, OPT_SPREAD_SENDS },
		{ "data-dir", required_argument, NULL, OPT_DATA_DIR },
		{ "fsync", required_argument, NULL, OPT_FSYNC },
		{ "repair-log", no_argument, NULL, OPT_REPAIR_LOG },
		{ "compact-min-bytes", required_argument, NULL,
		  OPT_COMPACT_MIN },
		{ 0 }
	};
	int c, lvl;
	bool min_given = false;

	while ((c = getopt_long(argc, argv, "p:b:t:l:hV", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'p':
			o->port = (uint16_t)parse_num("port", optarg, 0, 65535);
			break;
		case 'b':
			o->bind = optarg;
			break;
		case 't':
			cfg->threads = (uint32_t)parse_num("threads", optarg, 1,
							   256);
			break;
		case 'l':
			lvl = log_parse_level(optarg);
			if (lvl < 0) {
				fprintf(stderr, "ringstore: unknown log level "
						"'%s'\n", optarg);
				exit(2);
			}
			log_set_level((enum log_level)lvl);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("ringstore %s\n", RS_VERSION);
			exit(0);
		case OPT_LISTEN_FD:
			o->listen_fd = (int)parse_num("listen-fd", optarg, 0,
						      INT_MAX);
			break;
		case OPT_BACKLOG:
			o->backlog = (int)parse_num("backlog", optarg, 1,
						    INT_MAX);
			break;
		case OPT_MAX_KEY:
			cfg->limits.max_key = parse_num("max-key-bytes", optarg,
							1, UINT32_MAX);
			break;
		case OPT_MAX_VALUE:
			cfg->limits.max_value = parse_size(
				"max-value-bytes", optarg, 0, UINT32_MAX);
			break;
		case OPT_MAX_KEYS:
			cfg->limits.max_keys = parse_num(
				"max-keys-per-request", optarg, 1, UINT32_MAX);
			break;
		case OPT_MAX_REQUEST:
			cfg->limits.max_request = parse_size(
				"max-request-bytes", optarg, 64, UINT64_MAX / 2);
			break;
		case OPT_RECV_BUFFERS:
			cfg->buf_count = (uint32_t)parse_num(
				"recv-buffers", optarg, 16, 32768);
			if (cfg->buf_count & (cfg->buf_count - 1)) {
				fprintf(stderr, "ringstore: --recv-buffers "
						"must be a power of two\n");
				exit(2);
			}
			break;
		case OPT_RECV_BUFFERS_MIN:
			cfg->buf_min = (uint32_t)parse_num(
				"recv-buffers-min", optarg, 1, 32768);
			min_given = true;
			break;
		case OPT_RECV_BUFFER_SIZE:
			cfg->buf_size = (uint32_t)parse_num(
				"recv-buffer-size", optarg, 512, 1 << 20);
			break;
		case OPT_INITIAL_KEYS:
			o->initial_keys = parse_num("initial-keys", optarg, 16,
						    1u << 30);
			break;
		case OPT_MAX_CONNS:
			cfg->max_conns = parse_num("max-connections", optarg, 0,
						   UINT32_MAX);
			break;
		case OPT_MAX_MEMORY:
			o->max_memory = parse_size("max-memory", optarg, 0,
						   UINT64_MAX);
			break;
		case OPT_MAX_OUTPUT:
			cfg->max_output = parse_size("max-output-bytes", optarg,
						     4096, UINT64_MAX);
			break;
		case OPT_HANDSHAKE_TIMEOUT:
			cfg->handshake_ms = 1000 * (uint32_t)parse_num(
				"handshake-timeout", optarg, 0, 86400);
			break;
		case OPT_ALLOW:
			add_allow(cfg, optarg);
			break;
		case OPT_KEEPALIVE:
			o->keepalive = (int)parse_num("keepalive", optarg, 0,
						      32767);
			break;
		case OPT_CONTROL_IDLE:
			cfg->control_idle_ms = 1000 * (uint32_t)parse_num(
				"control-idle-timeout", optarg, 0, 86400);
			break;
		case OPT_CONTROL_PORT:
			o->control_port = (int)parse_num("control-port", optarg,
							 0, 65535);
			break;
		case OPT_CONTROL_BIND:
			o->control_bind = optarg;
			break;
		case OPT_CONTROL_SOCKET:
			o->control_socket = optarg;
			break;
		case OPT_IO:
			if (strcmp(optarg, "auto") && strcmp(optarg, "uring") &&
			    strcmp(optarg, "epoll")) {
				fprintf(stderr, "ringstore: --io wants 'auto', "
						"'uring' or 'epoll'\n");
				exit(2);
			}
			o->io = optarg;
			break;
		case OPT_MGET_CACHE:
			o->mget_cache = parse_on_off("mget-cache", optarg);
			break;
		case OPT_FIXED_FILES:
			cfg->fixed_files = parse_on_off("fixed-files", optarg);
			break;
		case OPT_SPREAD_SENDS:
			o->spread_sends = (int64_t)parse_numx(
				"spread-sends", optarg, 0, UINT32_MAX, false);
			break;
		case OPT_DATA_DIR:
			o->wal.dir = optarg;
			break;
		case OPT_FSYNC:
			if (!strcmp(optarg, "always")) {
				o->wal.fsync = WAL_FSYNC_ALWAYS;
			} else if (!strcmp(optarg, "everysec")) {
				o->wal.fsync = WAL_FSYNC_EVERYSEC;
			} else if (!strcmp(optarg, "no")) {
				o->wal.fsync = WAL_FSYNC_NO;
			} else {
				fprintf(stderr, "ringstore: --fsync wants "
						"'always', 'everysec' or 'no'\n");
				exit(2);
			}
			break;
		case OPT_REPAIR_LOG:
			o->wal.repair = true;
			break;
		case OPT_COMPACT_MIN:
			o->wal.compact_min = parse_size("compact-min-bytes",
							optarg, 4096,
							UINT64_MAX);
			break;
		case OPT_ACCEPT:
			if (!strcmp(optarg, "single")) {
				cfg->single_acceptor = true;
			} else if (!strcmp(optarg, "reuseport")) {
				cfg->single_acceptor = false;
			} else {
				fprintf(stderr, "ringstore: --accept wants "
						"'reuseport' or 'single'\n");
				exit(2);
			}
			break;
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ringstore: unexpected argument '%s'\n",
			argv[optind]);
		usage(stderr);
		exit(2);
	}
	/* The default minimum follows a smaller --recv-buffers; one given
	 * explicitly must fit in the ring. */
	if (min_given && cfg->buf_min > cfg->buf_count) {
		fprintf(stderr, "ringstore: --recv-buffers-min %u exceeds "
				"--recv-buffers %u; give at most %u (equal: "
				"a fixed ring)\n",
			cfg->buf_min, cfg->buf_count, cfg->buf_count);
		exit(2);
	}
}

/* The write log failed (wal.h): stop, as SIGTERM does. */
static void ask_to_stop(void)
{
	kill(getpid(), SIGTERM);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			log_warn("cannot raise the open-file limit: %s",
				 strerror(errno));
	}
	log_info("open-file limit: %llu", (unsigned long long)rl.rlim_cur);
}

/*
 * The I/O backend for --io @mode: io_uring where it can run (probed once),
 * else epoll with one line saying why; NULL where --io uring cannot run.
 */
static const struct io_ops *choose_io(const char *mode)
{
	char why[256];

	if (!strcmp(mode, "epoll"))
		return &io_epoll_ops;
	if (!io_uring_probe(why, sizeof(why)))
		return &io_uring_ops;
	if (!strcmp(mode, "uring")) {
		log_error("--io uring: %s", why);
		return NULL;
	}
	log_warn("%s; using epoll", why);
	return &io_epoll_ops;
}

/* systemd socket activation: LISTEN_PID is us and LISTEN_FDS >= 1. */
static int systemd_fd(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");

	if (!pid || !fds || strtol(pid, NULL, 10) != getpid() ||
	    strtol(fds, NULL, 10) < 1)
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return 3; /* SD_LISTEN_FDS_START */
}

/*
 * Listen on a Unix socket at @path (owner-only access). A stale socket file
 * left by an earlier run is replaced; any other file is an error.
 */
static int unix_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	if (!lstat(path, &st)) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	mode_t old = umask(0077);
	err = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 128)
		      ? -errno
		      : 0;
	umask(old);
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

int main(int argc, char **argv)
{
	struct options o = { .port = 29500, .listen_fd = -1, .backlog = -1,
			     .initial_keys = 1024, .control_port = -1,
			     .keepalive = 60, .io = "auto", .mget_cache = true,
			     .spread_sends = -1,
			     .wal = { .fsync = WAL_FSYNC_EVERYSEC },
			     .control_bind = "127.0.0.1" };
	struct server srv = { .control_fd = -1 };
	struct wal *wal = NULL;
	int *fds = NULL, ret, exit_code = 1;
	uint32_t nfds = 0;
	unsigned affinity, usable;
	double cg_limit;
	char addr[NET_ADDRSTRLEN], caddr[NET_ADDRSTRLEN + 4096], quota[64] = "";
	sigset_t sigs;

	proto_limits_default(&srv.cfg.limits);
	affinity = cpus_affinity();
	cg_limit = cpus_cgroup_limit("");
	usable = cpus_usable(affinity, cg_limit);
	srv.cfg.threads = default_threads(usable);
	srv.cfg.buf_count = RECV_BUFS_DEFAULT_COUNT;
	srv.cfg.buf_min = RECV_BUFS_DEFAULT_MIN;
	srv.cfg.buf_size = 16384;
	srv.cfg.ring_entries = 4096;
	srv.cfg.max_output = 256u << 20;
	srv.cfg.handshake_ms = 10000;
	srv.cfg.control_idle_ms = 60000;
	parse_args(argc, argv, &o, &srv.cfg);
	srv.cfg.spread_sends = o.spread_sends < 0
				       ? default_spread(affinity, srv.cfg.threads)
				       : (uint32_t)o.spread_sends;
	if (o.backlog < 0)
		o.backlog = SOMAXCONN > 4096 ? SOMAXCONN : 65535;

	/* Signals are taken by sigwait below; reactors inherit the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	srv.io = choose_io(o.io);
	if (!srv.io)
		goto out;

	fds = calloc(srv.cfg.threads, sizeof(*fds));
	if (!fds)
		goto out;
	if (o.listen_fd < 0)
		o.listen_fd = systemd_fd();
	if (o.listen_fd >= 0) {
		ret = listen_adopt(o.listen_fd, o.backlog);
		if (ret) {
			log_error("--listen-fd %d: %s", o.listen_fd,
				  ret == -EPROTONOSUPPORT ? "not a TCP socket"
				  : ret == -EDESTADDRREQ
					  ? "not bound to a port (bind it "
					    "first)"
					  : strerror(-ret));
			goto out;
		}
		/* Every reactor accepts from the one inherited socket. */
		for (uint32_t i = 0; i < srv.cfg.threads; i++)
			fds[i] = o.listen_fd;
		nfds = 1;
	} else {
		uint32_t nlisten = srv.cfg.single_acceptor ? 1 : srv.cfg.threads;
		char who[128];

		for (uint32_t i = 1; i < srv.cfg.threads; i++)
			fds[i] = -1;
		ret = listen_wait(&o, nlisten, fds, who, sizeof(who));
		if (ret < 0) {
			log_error("cannot listen on %s port %u: %s%s%s%s",
				  o.bind ? o.bind : "::", o.port,
				  strerror(-ret), who[0] ? " (held by " : "",
				  who, who[0] ? ")" : "");
			goto out;
		}
		nfds = nlisten;
	}
	/* Accepted sockets inherit keepalive from their listener, so that a
	 * client that vanished without a FIN or RST is found and closed. */
	for (uint32_t i = 0; o.keepalive && i < nfds; i++) {
		ret = net_set_keepalive(fds[i], o.keepalive);
		if (ret)
			log_warn("cannot enable TCP keepalive: %s",
				 strerror(-ret));
	}
	ret = net_local_addr(fds[0], addr, sizeof(addr));
	if (ret < 0) {
		log_error("getsockname: %s", strerror(-ret));
		goto out;
	}

	if (o.control_port >= 0 && o.control_socket) {
		log_error("use --control-port or --control-socket, not both");
		goto out;
	}
	if (o.control_port >= 0) {
		ret = net_listen(o.control_bind, (uint16_t)o.control_port, 128,
				 false);
		if (ret < 0) {
			log_error("cannot listen for the control plane on %s "
				  "port %d: %s", o.control_bind, o.control_port,
				  strerror(-ret));
			goto out;
		}
		srv.control_fd = ret;
		net_local_addr(ret, caddr, sizeof(caddr));
	} else if (o.control_socket) {
		ret = unix_listen(o.control_socket);
		if (ret < 0) {
			log_error("cannot listen on %s: %s", o.control_socket,
				  strerror(-ret));
			goto out;
		}
		srv.control_fd = ret;
		snprintf(caddr, sizeof(caddr), "unix:%s", o.control_socket);
	}

	ret = store_init(&srv.store, o.initial_keys, srv.cfg.threads);
	if (ret) {
		log_error("cannot create the store: %s", strerror(-ret));
		goto out;
	}
	if (o.wal.dir) {
		char why[1024];

		o.wal.writers = srv.cfg.threads;
		o.wal.on_fail = ask_to_stop;
		/* Before the listeners serve anyone: replay. */
		ret = wal_open(&wal, &o.wal, &srv.store, why, sizeof(why));
		if (ret) {
			log_error("%s", why);
			/* Damaged data: EX_DATAERR, which a supervisor told
			 * not to restart on it (deploy/) leaves to a person. */
			if (ret == -EBADMSG)
				exit_code = EXIT_DATA_DAMAGED;
			goto out_store;
		}
		ret = wal_start(wal);
		if (ret) {
			log_error("cannot start the write log's thread: %s",
				  strerror(-ret));
			goto out_store;
		}
		srv.store.wal = wal;
	}
	srv.store.max_memory = o.max_memory;
	srv.store.mget_cache_off = !o.mget_cache;
	srv.reactors = calloc(srv.cfg.threads, sizeof(*srv.reactors));
	srv.ios = calloc(srv.cfg.threads, sizeof(*srv.ios));
	srv.stats = calloc(srv.cfg.threads, sizeof(*srv.stats));
	if (!srv.reactors || !srv.ios || !srv.stats)
		goto out_store;
	for (uint32_t i = 0; i < srv.cfg.threads; i++) {
		srv.reactors[i] = reactor_create(&srv, i, fds[i]);
		if (!srv.reactors[i])
			goto out_reactors;
		srv.nreactors++;
	}
	for (uint32_t i = 0; i < srv.nreactors; i++) {
		ret = reactor_start(srv.reactors[i]);
		if (ret) {
			log_error("reactor %u: cannot start: %s", i,
				  strerror(-ret));
			goto out_reactors;
		}
	}
	printf("ringstore listening on %s\n", addr);
	if (srv.control_fd >= 0)
		printf("ringstore control on %s\n", caddr);
	fflush(stdout);
	if (cg_limit > 0)
		snprintf(quota, sizeof(quota), ", cgroup CPU quota %.2f",
			 cg_limit);
	log_info("ringstore %s: %u reactor thread%s on %s (CPUs: %u in the "
		 "affinity mask%s), limits: key %" PRIu64 " B, value %" PRIu64
		 " B, %" PRIu64 " keys/request",
		 RS_VERSION, srv.nreactors, srv.nreactors == 1 ? "" : "s",
		 srv.io->name, affinity, quota,
		 srv.cfg.limits.max_key, srv.cfg.limits.max_value,
		 srv.cfg.limits.max_keys);
	if (srv.nreactors > usable)
		log_warn("%u reactors on %u usable CPU%s: reactors beyond the "
			 "CPUs cost CPU per operation and latency; the "
			 "default (leave out --threads) is %u",
			 srv.nreactors, usable, usable == 1 ? "" : "s",
			 default_threads(usable));

	for (;;) {
		int sig;
		if (sigwait(&sigs, &sig) == 0) {
			log_info("received %s, shutting down", strsignal(sig));
			break;
		}
	}
	exit_code = 0;

out_reactors:
	atomic_store(&srv.stopping, true);
	for (uint32_t i = 0; i < srv.nreactors; i++)
		reactor_stop(srv.reactors[i]);
	struct stats total = { 0 };
	char line[2048];
	for (uint32_t i = 0; i < srv.nreactors; i++)
		reactor_join(srv.reactors[i], &total);
	for (uint32_t i = 0; i < srv.nreactors; i++)
		reactor_destroy(srv.reactors[i]);
	stats_format(&total, line, sizeof(line));
	log_info("%s", line);
out_store:
	free(srv.reactors);
	free(srv.ios);
	free(srv.stats);
	if (wal_close(wal))
		exit_code = 1;
	store_destroy(&srv.store);
out:
	for (uint32_t i = 0; i < nfds; i++)
		close(fds[i]);
	free(fds);
	free(srv.cfg.allow);
	if (srv.control_fd >= 0) {
		close(srv.control_fd);
		if (o.control_socket)
			unlink(o.control_socket);
	}
	return exit_code;
}
