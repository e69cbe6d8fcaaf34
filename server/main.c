/* SPDX-License-Identifier: MIT */
/*
 * main.c - the ringstore binary's start-up and shutdown, one step per
 * function, in the order main() runs them: the options (options.c reads
 * the command line), the signals, the I/O backend, the store and, with
 * --data-dir, its replay (wal.h), the listening sockets, the control
 * plane's listener, the reactors; then it announces the address, waits for
 * SIGINT or SIGTERM, stops and joins the reactors, closes the log and logs
 * their counters. Nothing else lives here, and only this file exits.
 */
#include <errno.h>
#include <inttypes.h>
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
#include "now.h"
#include "options.h"
#include "reactor.h"
#include "server.h"
#include "stats.h"
#include "store.h"
#include "wal.h"

/* sysexits.h's EX_DATAERR: the data directory is damaged (--repair-log). */
#define EXIT_DATA_DAMAGED 65

#ifndef RS_VERSION
#define RS_VERSION "0.0.0"
#endif

/* Submission-queue entries per reactor's ring; not a flag. */
#define RING_ENTRIES 4096

/* How much CPU this process may use (cpus.h), read once at start-up. */
struct cpu_budget {
	unsigned affinity; /* CPUs in the affinity mask */
	double quota;      /* the cgroup's CPU quota in CPUs; 0: none */
	unsigned usable;   /* what the two allow busy at once */
};

/* The sockets main() opens before the reactors and closes after them. */
struct sockets {
	int *fds;      /* owned: reactor i's listener (one shared by all
			    * with --listen-fd) */
	uint32_t nfds; /* distinct sockets, at the front of fds */
	char addr[NET_ADDRSTRLEN];                /* where clients connect */
	char control_addr[NET_ADDRSTRLEN + 4096]; /* the control plane's */
};

/*
 * Step 1: the command line. Returns -1 to go on, or the exit status where
 * the process is done: 0 after --help or --version, 2 for a bad command
 * line (1 when out of memory), its message on stderr.
 */
static int read_options(struct options *o, int argc, char **argv)
{
	struct options_error err;
	int ret = options_parse(o, argc, argv, &err);

	if (ret) {
		fprintf(stderr, "ringstore: %s\n", err.msg);
		if (err.usage)
			options_usage(stderr);
		return ret == -ENOMEM ? 1 : 2;
	}
	if (o->help) {
		options_usage(stdout);
		return 0;
	}
	if (o->version) {
		printf("ringstore %s\n", RS_VERSION);
		return 0;
	}
	log_set_level((enum log_level)o->log_level);
	return -1;
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
 * worker, or epoll's helper thread, needs one to be of use), else never. A
 * batch has at most one send per connection, so only a burst over hundreds
 * of connections reaches it; the benchmark's throughput workloads rarely do
 * (bench/RESULTS.md). The mask, not the quota, decides: a burst of 100 ms
 * runs on both CPUs within a quota of one CPU (a 16k fanout took 0.81x the
 * time spread there).
 */
#define SPREAD_SENDS_DEFAULT 256

static uint32_t default_spread(unsigned affinity, uint32_t threads)
{
	return affinity > threads ? SPREAD_SENDS_DEFAULT : 0;
}

/*
 * Step 1, continued: the server's configuration: the command line's,
 * moved from @o, with what it left to the CPUs (@cpu, measured here)
 * filled in: the reactors and --spread-sends.
 */
static void configure(struct server_config *cfg, struct options *o,
		      struct cpu_budget *cpu)
{
	cpu->affinity = cpus_affinity();
	cpu->quota = cpus_cgroup_limit("");
	cpu->usable = cpus_usable(cpu->affinity, cpu->quota);
	*cfg = o->cfg;
	o->cfg.allow = NULL; /* moved: main() frees cfg->allow */
	o->cfg.nallow = 0;
	if (!cfg->threads)
		cfg->threads = default_threads(cpu->usable);
	cfg->spread_sends = o->spread_sends < 0 ? default_spread(cpu->affinity,
								 cfg->threads)
						: (uint32_t)o->spread_sends;
	cfg->ring_entries = RING_ENTRIES;
}

/*
 * Step 2: SIGINT and SIGTERM wait in @sigs for wait_for_signal()'s
 * sigwait(), blocked in every thread (the reactors inherit the mask); a
 * peer that closed is an error return, not SIGPIPE.
 */
static void block_signals(sigset_t *sigs)
{
	sigemptyset(sigs);
	sigaddset(sigs, SIGINT);
	sigaddset(sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Each client is a file: allow as many as the hard limit does. */
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
 * Step 3: the I/O backend for --io @mode (enum options_io): io_uring where
 * it can run (probed once), else epoll with one line saying why; NULL
 * where --io uring cannot run.
 */
static const struct io_ops *choose_io(uint32_t mode)
{
	char why[256];

	if (mode == OPTIONS_IO_EPOLL)
		return &io_epoll_ops;
	if (!io_uring_probe(why, sizeof(why)))
		return &io_uring_ops;
	if (mode == OPTIONS_IO_URING) {
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
	uint64_t start = now_mono_ms(), now = start, scanned = start;

	for (;;) {
		/* Naming the holder scans every process's descriptors: on a
		 * busy host that takes long, so between retries of the bind
		 * it is done twice a second, and the wait is measured on the
		 * clock, not in retries. */
		bool scan = now == start || now - scanned >= 500 ||
			    now - start >= LISTEN_WAIT_MS;
		int ret = listen_open(o->bind, &o->port, o->backlog, n, fds,
				      scan ? who : NULL, wholen);

		if (ret != -EADDRINUSE || (scan && who[0]))
			return ret;
		if (scan)
			scanned = now;
		if (now - start >= LISTEN_WAIT_MS) {
			snprintf(who, wholen,
				 "a socket that no process here owns, "
				 "still after %d s",
				 LISTEN_WAIT_MS / 1000);
			return ret;
		}
		if (now == start)
			log_warn("port %u is held by a socket that no process "
				 "here owns (a server that has just exited?); "
				 "waiting up to %d s for it to close",
				 o->port, LISTEN_WAIT_MS / 1000);
		usleep(50 * 1000);
		now = now_mono_ms();
	}
}

/* Undo open_store(); also what a half-done one leaves. */
static void close_store(struct server *srv)
{
	free(srv->reactors);
	free(srv->ios);
	free(srv->stats);
	store_destroy(&srv->store);
}

/*
 * Step 4: the store, and the arrays of the reactors' faces. 0, or -1 with
 * the reason logged and nothing left to undo.
 */
static int open_store(struct server *srv, const struct options *o)
{
	uint32_t n = srv->cfg.threads;
	int ret = store_init(&srv->store, o->initial_keys, n);

	if (ret) {
		log_error("cannot create the store: %s", strerror(-ret));
		return -1;
	}
	srv->store.max_memory = o->data_dir ? 0 : o->max_memory;
	srv->store.mget_cache_off = !o->mget_cache;
	srv->reactors = calloc(n, sizeof(*srv->reactors));
	srv->ios = calloc(n, sizeof(*srv->ios));
	srv->stats = calloc(n, sizeof(*srv->stats));
	if (!srv->reactors || !srv->ios || !srv->stats) {
		log_error("cannot create the store: out of memory");
		close_store(srv);
		return -1;
	}
	return 0;
}

/* The write log failed (wal.h): stop, as SIGTERM does. */
static void ask_to_stop(void)
{
	kill(getpid(), SIGTERM);
}

/*
 * Step 5, with --data-dir: take the data directory, replay it into the
 * store (before any listener exists: a client never meets a half-built
 * store) and start the log's thread. 0, or the exit status with the
 * reason logged: 65 (EX_DATAERR) for damaged data, which a supervisor can
 * be told not to restart into.
 */
static int open_log(struct server *srv, const struct options *o,
		    struct wal **out)
{
	struct wal_config cfg = {
		.dir = o->data_dir,
		.fsync = (enum wal_fsync)o->fsync,
		.repair = o->repair_log,
		.compact_min = o->compact_min_bytes,
		.writers = srv->cfg.threads,
		.on_fail = ask_to_stop,
	};
	char why[1024];
	int ret;

	*out = NULL;
	if (!o->data_dir)
		return 0;
	ret = wal_open(out, &cfg, &srv->store, why, sizeof(why));
	if (ret) {
		log_error("%s", why);
		return ret == -EBADMSG ? EXIT_DATA_DAMAGED : 1;
	}
	ret = wal_start(*out);
	if (ret) {
		log_error("cannot start the write log's thread: %s",
			  strerror(-ret));
		return 1;
	}
	/* Replay is done: the store's threads log from here on, and the
	 * memory cap applies to what clients write, not to what came back. */
	srv->store.wal = *out;
	srv->store.max_memory = o->max_memory;
	return 0;
}

/*
 * Step 6: the client listeners, into @sk: the socket of --listen-fd or of
 * systemd, shared by every reactor; else one per reactor (SO_REUSEPORT), or
 * one for reactor 0 with --accept single. Accepted sockets inherit TCP
 * keepalive from their listener, so that a client that vanished without a
 * FIN or RST is found and closed. 0, or -1 with the reason logged.
 */
static int open_listeners(struct sockets *sk, struct options *o,
			  const struct server_config *cfg)
{
	int ret;

	sk->fds = calloc(cfg->threads, sizeof(*sk->fds));
	if (!sk->fds)
		return -1;
	if (o->backlog < 0)
		o->backlog = SOMAXCONN > 4096 ? SOMAXCONN : 65535;
	if (o->listen_fd < 0)
		o->listen_fd = systemd_fd();
	if (o->listen_fd >= 0) {
		ret = listen_adopt(o->listen_fd, o->backlog);
		if (ret) {
			log_error("--listen-fd %d: %s", o->listen_fd,
				  ret == -EPROTONOSUPPORT ? "not a TCP socket"
				  : ret == -EDESTADDRREQ
					  ? "not bound to a port (bind it "
					    "first)"
					  : strerror(-ret));
			return -1;
		}
		for (uint32_t i = 0; i < cfg->threads; i++)
			sk->fds[i] = o->listen_fd;
		sk->nfds = 1;
	} else {
		uint32_t n = cfg->single_acceptor ? 1 : cfg->threads;
		char who[128];

		for (uint32_t i = 1; i < cfg->threads; i++)
			sk->fds[i] = -1;
		ret = listen_wait(o, n, sk->fds, who, sizeof(who));
		if (ret < 0) {
			log_error("cannot listen on %s port %u: %s%s%s%s",
				  o->bind ? o->bind : "::", o->port,
				  strerror(-ret), who[0] ? " (held by " : "",
				  who, who[0] ? ")" : "");
			return -1;
		}
		sk->nfds = n;
	}
	for (uint32_t i = 0; o->keepalive && i < sk->nfds; i++) {
		ret = net_set_keepalive(sk->fds[i], o->keepalive);
		if (ret)
			log_warn("cannot enable TCP keepalive: %s",
				 strerror(-ret));
	}
	ret = net_local_addr(sk->fds[0], sk->addr, sizeof(sk->addr));
	if (ret < 0) {
		log_error("getsockname: %s", strerror(-ret));
		return -1;
	}
	return 0;
}

/*
 * Step 7: the control plane's listener, if asked for: srv->control_fd, and
 * its address in @sk. 0, or -1 with the reason logged.
 */
static int open_control(struct server *srv, struct sockets *sk,
			const struct options *o)
{
	int fd;

	if (o->control_port >= 0 && o->control_socket) {
		log_error("use --control-port or --control-socket, not both");
		return -1;
	}
	if (o->control_port >= 0) {
		fd = net_listen(o->control_bind, (uint16_t)o->control_port, 128,
				false);
		if (fd < 0) {
			log_error("cannot listen for the control plane on %s "
				  "port %d: %s",
				  o->control_bind, o->control_port,
				  strerror(-fd));
			return -1;
		}
		net_local_addr(fd, sk->control_addr, sizeof(sk->control_addr));
	} else if (o->control_socket) {
		fd = unix_listen(o->control_socket);
		if (fd < 0) {
			log_error("cannot listen on %s: %s", o->control_socket,
				  strerror(-fd));
			return -1;
		}
		snprintf(sk->control_addr, sizeof(sk->control_addr), "unix:%s",
			 o->control_socket);
	} else {
		return 0;
	}
	srv->control_fd = fd;
	return 0;
}

/*
 * Step 8: create every reactor, reactor i on listener @fds[i], then start
 * their threads. 0, or -1 with the reason logged; srv->nreactors counts
 * those created either way, for stop_reactors().
 */
static int start_reactors(struct server *srv, const int *fds)
{
	int ret;

	for (uint32_t i = 0; i < srv->cfg.threads; i++) {
		srv->reactors[i] = reactor_create(srv, i, fds[i]);
		if (!srv->reactors[i])
			return -1;
		srv->nreactors++;
	}
	for (uint32_t i = 0; i < srv->nreactors; i++) {
		ret = reactor_start(srv->reactors[i]);
		if (ret) {
			log_error("reactor %u: cannot start: %s", i,
				  strerror(-ret));
			return -1;
		}
	}
	return 0;
}

/*
 * Step 9: the addresses on stdout (what scripts and tests wait for), then
 * the start-up line, and a warning if the reactors outnumber the CPUs.
 */
static void announce(const struct server *srv, const struct sockets *sk,
		     const struct cpu_budget *cpu)
{
	char quota[64] = "";

	printf("ringstore listening on %s\n", sk->addr);
	if (srv->control_fd >= 0)
		printf("ringstore control on %s\n", sk->control_addr);
	fflush(stdout);
	if (cpu->quota > 0)
		snprintf(quota, sizeof(quota), ", cgroup CPU quota %.2f",
			 cpu->quota);
	log_info("ringstore %s: %u reactor thread%s on %s (CPUs: %u in the "
		 "affinity mask%s), limits: key %" PRIu64 " B, value %" PRIu64
		 " B, %" PRIu64 " keys/request",
		 RS_VERSION, srv->nreactors, srv->nreactors == 1 ? "" : "s",
		 srv->io->name, cpu->affinity, quota, srv->cfg.limits.max_key,
		 srv->cfg.limits.max_value, srv->cfg.limits.max_keys);
	if (srv->nreactors > cpu->usable)
		log_warn("%u reactors on %u usable CPU%s: reactors beyond the "
			 "CPUs cost CPU per operation and latency; the "
			 "default (leave out --threads) is %u",
			 srv->nreactors, cpu->usable,
			 cpu->usable == 1 ? "" : "s",
			 default_threads(cpu->usable));
}

/*
 * Step 10: until SIGINT or SIGTERM, or with --idle-exit S until no store
 * client has been connected for S seconds (a store that a torchrun agent
 * started for its job ends with the job: ringstore.rendezvous).
 */
static void wait_for_signal(const sigset_t *sigs, const struct server *srv,
			    uint32_t idle_exit_s)
{
	const struct timespec tick = { .tv_sec = 1 };
	uint64_t idle_since = now_mono_ms();
	int sig;

	for (;;) {
		if (!idle_exit_s) {
			if (!sigwait(sigs, &sig))
				break;
			continue;
		}
		sig = sigtimedwait(sigs, NULL, &tick);
		if (sig > 0)
			break;
		if (atomic_load_explicit(&srv->conns, memory_order_relaxed))
			idle_since = now_mono_ms();
		else if (now_mono_ms() - idle_since >= idle_exit_s * 1000ull) {
			log_info("no client for %u s (--idle-exit): shutting "
				 "down",
				 idle_exit_s);
			return;
		}
	}
	log_info("received %s, shutting down", strsignal(sig));
}

/*
 * Step 11: stop, join and free the reactors created, then log the sum of
 * their counters: the "stats:" line.
 */
static void stop_reactors(struct server *srv)
{
	struct stats total = { 0 };
	char line[2048];

	for (uint32_t i = 0; i < srv->nreactors; i++)
		reactor_stop(srv->reactors[i]);
	for (uint32_t i = 0; i < srv->nreactors; i++)
		reactor_join(srv->reactors[i], &total);
	for (uint32_t i = 0; i < srv->nreactors; i++)
		reactor_destroy(srv->reactors[i]);
	stats_format(&total, line, sizeof(line));
	log_info("%s", line);
}

/* Close what open_listeners() and open_control() opened. */
static void close_sockets(struct sockets *sk, struct server *srv,
			  const struct options *o)
{
	for (uint32_t i = 0; i < sk->nfds; i++)
		close(sk->fds[i]);
	free(sk->fds);
	if (srv->control_fd >= 0) {
		close(srv->control_fd);
		if (o->control_socket)
			unlink(o->control_socket);
	}
}

int main(int argc, char **argv)
{
	struct options o;
	struct server srv = { .control_fd = -1 };
	struct sockets sk = { 0 };
	struct cpu_budget cpu;
	struct wal *wal = NULL;
	sigset_t sigs;
	int code = read_options(&o, argc, argv);

	if (code >= 0)
		goto out_options;
	code = 1;
	configure(&srv.cfg, &o, &cpu);
	block_signals(&sigs);
	raise_nofile();
	srv.io = choose_io(o.io);
	if (!srv.io || open_store(&srv, &o))
		goto out;
	code = open_log(&srv, &o, &wal);
	if (code || open_listeners(&sk, &o, &srv.cfg) ||
	    open_control(&srv, &sk, &o)) {
		code = code ? code : 1;
		goto out_store;
	}
	code = 1;
	if (!start_reactors(&srv, sk.fds)) {
		announce(&srv, &sk, &cpu);
		wait_for_signal(&sigs, &srv, o.idle_exit_s);
		code = 0;
	}
	stop_reactors(&srv);
out_store:
	/* After the reactors: every record they published is written. */
	if (wal_close(wal))
		code = 1;
	close_store(&srv);
out:
	close_sockets(&sk, &srv, &o);
	free(srv.cfg.allow);
out_options:
	options_free(&o);
	return code;
}
