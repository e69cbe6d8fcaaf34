/* SPDX-License-Identifier: MIT */
/*
 * engine.c - the engine of ringstore-bench (see engine.h): a TCPStore load
 * generator that drives its connections through io_uring, for ringstore and
 * for PyTorch's own servers, and calls a workload's hooks for what to send.
 *
 * Each bench thread owns one ring and a contiguous share of the connections.
 * Connections are opened with at most --connect-inflight connects in flight
 * (the server's accept backlog is finite), optionally bound to source
 * addresses 127.0.0.1, .2, ... so more than one address's worth of ephemeral
 * ports can be used. Every connection does the real handshake (VALIDATE,
 * PING with a nonce, the echo checked) before any workload traffic. Replies
 * arrive through one multishot recv per connection drawing from the
 * thread's provided-buffer ring; they are scanned in place by proto's reply
 * scanner, so the client never copies a value. Requests are appended to a
 * per-connection buffer and sent with one SEND per connection per loop
 * iteration (the buffer in flight is never appended to).
 *
 * The main thread drives the run through a phase word (connect, prepare,
 * run, drain, done), samples the server's /proc files around the measured
 * window, prints a progress line on a terminal, and merges the threads'
 * histograms and counters into the report (text or --json).
 */
#include "engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cpus.h"
#include "log.h"
#include "net.h"
#include "now.h"
#include "uring.h"

enum ud_kind {
	UD_CONNECT = 1,
	UD_RECV,
	UD_SEND
};

#define BENCH_MAX_RETRIES 20

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static uint32_t g_nsrc;
static volatile sig_atomic_t g_interrupted;

static inline uint64_t ud_pack(enum ud_kind k, const struct bench_conn *c)
{
	return (uint64_t)k << 56 | (uint64_t)c->gen << 32 | c->idx;
}

/* An SQE, never NULL (common/uring.h). */
static struct io_uring_sqe *bench_sqe(struct bench_thread *t)
{
	return uring_sqe(&t->ring, "bench");
}

static void mark_dirty(struct bench_thread *t, struct bench_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	t->dirty[t->ndirty++] = c;
}

void bench_tx_begin(struct bench_thread *t, struct bench_conn *c, uint16_t ops,
		    uint16_t keys, uint64_t t0)
{
	struct bench_tx *x = &c->tx[(c->th + c->tn) & (BENCH_TXQ - 1)];

	x->t0 = t0 ? t0 : now_mono_ns();
	x->ops = ops;
	x->keys = keys;
	x->measured = ops && t->seen_phase == PH_RUN && c->state == CS_READY;
	c->tn++;
	c->open_exp = 0;
}

void bench_expect(struct bench_conn *c, enum proto_op op, uint16_t nkeys)
{
	struct bench_exp *e = &c->exp[(c->eh + c->en) & (BENCH_EXPQ - 1)];

	e->op = (uint8_t)op;
	e->last = 0;
	e->nkeys = nkeys;
	c->en++;
	c->open_exp++;
}

void bench_tx_end(struct bench_thread *t, struct bench_conn *c)
{
	if (c->open_exp) {
		c->exp[(c->eh + c->en - 1) & (BENCH_EXPQ - 1)].last = 1;
	} else {
		/* No reply to wait for: it is done once queued (tail pop). */
		struct bench_tx *x =
			&c->tx[(c->th + c->tn - 1) & (BENCH_TXQ - 1)];
		if (x->measured) {
			t->ops += x->ops;
			t->keys += x->keys;
			t->untimed_ops += x->ops;
		}
		c->tn--;
	}
	mark_dirty(t, c);
}

/* Forget the queues and buffers of @c before a (re)connect. */
static void conn_reset(struct bench_conn *c)
{
	buf_reset(&c->out);
	buf_reset(&c->inflight);
	c->sending = c->recv_armed = c->scanning = false;
	c->eh = c->en = c->th = c->tn = c->open_exp = 0;
	c->caplen = 0;
	c->wl = 0;
	c->wl_a = c->wl_b = 0;
}

static void conn_close_fd(struct bench_conn *c)
{
	if (c->fd >= 0) {
		/* shutdown ends the multishot recv that holds the file. */
		shutdown(c->fd, SHUT_RDWR);
		close(c->fd);
		c->fd = -1;
	}
	c->gen++;
	c->sending = c->recv_armed = false;
}

/* Count a connection-level error and close @c for good. */
static void bench_conn_fail(struct bench_thread *t, struct bench_conn *c,
			    const char *why)
{
	if (c->state == CS_DEAD)
		return;
	log_debug("bench: connection %u failed: %s", c->id, why);
	if (c->state == CS_READY)
		t->ready--;
	conn_close_fd(c);
	c->state = CS_DEAD;
	t->dead++;
	t->errors++;
}

/*
 * A connect or handshake failure the server's backlog can cause: count a
 * reset and try again later with backoff, up to BENCH_MAX_RETRIES times.
 */
static void conn_retry(struct bench_thread *t, struct bench_conn *c,
		       const char *why, uint64_t now)
{
	t->resets++;
	conn_close_fd(c);
	if (++c->retries > BENCH_MAX_RETRIES) {
		c->state = CS_HANDSHAKE; /* so fail counts it */
		bench_conn_fail(t, c, why);
		return;
	}
	unsigned shift = c->retries < 6 ? c->retries : 6;
	c->state = CS_RETRY;
	c->due_ns = now + (10000000ull << shift);
	t->nretry++;
}

static void conn_start(struct bench_thread *t, struct bench_conn *c,
		       uint64_t now)
{
	int one = 1;
	int fd = socket(g_addr.ss_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		c->state = CS_HANDSHAKE;
		bench_conn_fail(t, c, strerror(errno));
		return;
	}
	net_set_nodelay(fd);
	if (g_nsrc && g_addr.ss_family == AF_INET) {
		struct sockaddr_in src = { .sin_family = AF_INET };
		src.sin_addr.s_addr = htonl(0x7f000001u + c->id % g_nsrc);
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
			   sizeof(one));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src))) {
			int err = errno;
			close(fd);
			c->state = CS_HANDSHAKE;
			bench_conn_fail(t, c, strerror(err));
			return;
		}
	}
	conn_reset(c);
	c->fd = fd;
	c->gen++;
	c->state = CS_CONNECTING;
	if (!c->t_start)
		c->t_start = now;
	struct io_uring_sqe *sqe = bench_sqe(t);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&g_addr, g_addrlen);
	io_uring_sqe_set_data64(sqe, ud_pack(UD_CONNECT, c));
	t->connecting++;
}

static void arm_recv(struct bench_thread *t, struct bench_conn *c)
{
	struct io_uring_sqe *sqe = bench_sqe(t);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data64(sqe, ud_pack(UD_RECV, c));
	c->recv_armed = true;
}

static void on_connect(struct bench_thread *t, struct bench_conn *c, int res,
		       uint64_t now)
{
	t->connecting--;
	if (res < 0) {
		conn_retry(t, c, strerror(-res), now);
		return;
	}
	t->last_connect_ns = now;
	c->state = CS_HANDSHAKE;
	bench_tx_begin(t, c, 0, 0, 0);
	proto_enc_validate(&c->out);
	proto_enc_ping(&c->out, c->id ^ 0x5a5a0000u);
	bench_expect(c, OP_PING, 0);
	bench_tx_end(t, c);
	arm_recv(t, c);
}

static void flush_conn(struct bench_thread *t, struct bench_conn *c)
{
	if (c->sending || c->fd < 0 ||
	    (c->state != CS_READY && c->state != CS_HANDSHAKE))
		return;
	if (!buf_used(&c->inflight)) {
		if (!buf_used(&c->out))
			return;
		struct buf tmp = c->inflight;
		c->inflight = c->out;
		c->out = tmp;
		buf_reset(&c->out);
	}
	struct io_uring_sqe *sqe = bench_sqe(t);
	io_uring_prep_send(sqe, c->fd, buf_head(&c->inflight),
			   buf_used(&c->inflight), MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_pack(UD_SEND, c));
	c->sending = true;
}

static void on_send(struct bench_thread *t, struct bench_conn *c, int res)
{
	c->sending = false;
	if (res < 0) {
		bench_conn_fail(t, c, strerror(-res));
		return;
	}
	buf_consume(&c->inflight, (size_t)res);
	if (t->seen_phase == PH_RUN)
		t->tx_bytes += (uint64_t)res;
	mark_dirty(t, c);
}

static void tx_complete(struct bench_thread *t, struct bench_conn *c,
			uint64_t now)
{
	struct bench_tx *x = &c->tx[c->th];

	c->th = (c->th + 1) & (BENCH_TXQ - 1);
	c->tn--;
	if (!x->measured || t->seen_phase != PH_RUN)
		return;
	/* Rendezvous and fanout record their own latencies. */
	if (!t->b->o.wl->own_latency)
		hist_record(&t->lat, now > x->t0 ? now - x->t0 : 0);
	t->ops += x->ops;
	t->keys += x->keys;
	t->txs++;
}

/* One reply ended: the handshake echo, or the workload's business. */
static int reply_done(struct bench_thread *t, struct bench_conn *c, uint8_t op,
		      uint64_t now)
{
	if (c->state == CS_HANDSHAKE) {
		uint32_t nonce;
		memcpy(&nonce, c->cap, 4);
		if (op != OP_PING || c->caplen < 4 ||
		    nonce != (c->id ^ 0x5a5a0000u))
			return -EPROTO;
		c->state = CS_READY;
		t->ready++;
		return 0;
	}
	return t->b->o.wl->reply(t, c, op, c->cap, c->caplen, now);
}

/* Scan @n received bytes of @c against its expected replies. */
static void conn_input(struct bench_thread *t, struct bench_conn *c,
		       const uint8_t *p, size_t n, uint64_t now)
{
	uint16_t gen = c->gen;

	if (t->seen_phase == PH_RUN)
		t->rx_bytes += n;
	while (n) {
		if (!c->en) {
			bench_conn_fail(t, c, "bytes nobody asked for");
			return;
		}
		struct bench_exp *e = &c->exp[c->eh];
		if (!c->scanning) {
			proto_reply_init(&c->sc, (enum proto_op)e->op, e->nkeys,
					 64u << 20);
			c->scanning = true;
			c->caplen = 0;
		}
		size_t used;
		int r = proto_reply_feed(&c->sc, p, n, &used);
		if (r < 0) {
			bench_conn_fail(t, c, "malformed reply");
			return;
		}
		if (c->caplen < BENCH_CAP) {
			size_t k = BENCH_CAP - c->caplen;
			if (k > used)
				k = used;
			memcpy(c->cap + c->caplen, p, k);
			c->caplen += (uint8_t)k;
		}
		p += used;
		n -= used;
		if (r == 0)
			break;
		uint8_t op = e->op, last = e->last;
		c->scanning = false;
		c->eh = (c->eh + 1) & (BENCH_EXPQ - 1);
		c->en--;
		if (reply_done(t, c, op, now) < 0) {
			bench_conn_fail(t, c, "unexpected reply");
			return;
		}
		if (c->gen != gen)
			return;
		if (last)
			tx_complete(t, c, now);
	}
	if (t->seen_phase == PH_PREPARE || t->seen_phase == PH_RUN)
		t->b->o.wl->issue(t, c, t->seen_phase, now);
}

static void on_recv(struct bench_thread *t, struct bench_conn *c,
		    struct io_uring_cqe *cqe, bool stale, uint64_t now)
{
	int res = cqe->res;
	bool more = cqe->flags & IORING_CQE_F_MORE;

	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uint8_t *p = t->bufs + (size_t)bid * t->bufsz;
		if (!stale && res > 0)
			conn_input(t, c, p, (size_t)res, now);
		io_uring_buf_ring_add(t->br, p, t->bufsz, (unsigned short)bid,
				      io_uring_buf_ring_mask(t->nbufs), 0);
		io_uring_buf_ring_advance(t->br, 1);
	}
	if (stale || c->fd < 0)
		return;
	if (!more)
		c->recv_armed = false;
	if (res == 0 || (res < 0 && res != -ENOBUFS)) {
		const char *why = res == 0 ? "closed by the server"
					   : strerror(-res);
		if (c->state == CS_HANDSHAKE)
			conn_retry(t, c, why, now);
		else
			bench_conn_fail(t, c, why);
		return;
	}
	if (!c->recv_armed && c->state != CS_DEAD)
		arm_recv(t, c);
}

static void handle_cqe(struct bench_thread *t, struct io_uring_cqe *cqe,
		       uint64_t now)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	unsigned kind = (unsigned)(ud >> 56);
	uint16_t gen = (uint16_t)(ud >> 32);
	uint32_t idx = (uint32_t)ud;

	if (idx >= t->nconns)
		return;
	struct bench_conn *c = &t->conns[idx];
	bool stale = gen != c->gen;

	switch (kind) {
	case UD_RECV:
		on_recv(t, c, cqe, stale, now);
		break;
	case UD_CONNECT:
		if (!stale)
			on_connect(t, c, cqe->res, now);
		break;
	case UD_SEND:
		if (!stale)
			on_send(t, c, cqe->res);
		break;
	default:
		break;
	}
}

static int thread_setup(struct bench_thread *t)
{
	struct io_uring_params p = { 0 };
	struct io_uring_buf_reg reg = { 0 };
	unsigned entries = 4096;
	int ret;

	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
		  IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = 65536;
	ret = io_uring_queue_init_params(entries, &t->ring, &p);
	if (ret < 0) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = 65536;
		ret = io_uring_queue_init_params(entries, &t->ring, &p);
	}
	if (ret < 0)
		return ret;
	t->ring_ok = true;
	t->nbufs = 1024;
	t->bufsz = 16384;
	if (posix_memalign((void **)&t->br, 4096,
			   t->nbufs * sizeof(struct io_uring_buf)))
		return -ENOMEM;
	t->bufs = malloc((size_t)t->nbufs * t->bufsz);
	if (!t->bufs)
		return -ENOMEM;
	reg.ring_addr = (unsigned long)t->br;
	reg.ring_entries = t->nbufs;
	reg.bgid = 0;
	ret = io_uring_register_buf_ring(&t->ring, &reg, 0);
	if (ret < 0)
		return ret;
	io_uring_buf_ring_init(t->br);
	for (unsigned i = 0; i < t->nbufs; i++)
		io_uring_buf_ring_add(t->br, t->bufs + (size_t)i * t->bufsz,
				      t->bufsz, (unsigned short)i,
				      io_uring_buf_ring_mask(t->nbufs), (int)i);
	io_uring_buf_ring_advance(t->br, (int)t->nbufs);
	return t->b->o.wl->thread_init ? t->b->o.wl->thread_init(t) : 0;
}

static void publish(struct bench_thread *t)
{
	atomic_store_explicit(&t->pub.ready, t->ready, memory_order_relaxed);
	atomic_store_explicit(&t->pub.dead, t->dead, memory_order_relaxed);
	atomic_store_explicit(&t->pub.ops, t->ops, memory_order_relaxed);
	atomic_store_explicit(&t->pub.keys, t->keys, memory_order_relaxed);
	atomic_store_explicit(&t->pub.done, t->done, memory_order_relaxed);
}

static void *thread_main(void *arg)
{
	struct bench_thread *t = arg;
	struct bench *b = t->b;
	const struct bench_opts *o = &b->o;
	uint32_t cap = o->connect_inflight / o->threads;
	bool connect_in_run = o->wl->connects_in_run;
	int ret = thread_setup(t);

	if (ret < 0) {
		log_error("bench thread %d: setup failed: %s", t->id,
			  strerror(-ret));
		for (uint32_t i = 0; i < t->nconns; i++)
			t->conns[i].state = CS_DEAD;
		t->dead = t->nconns;
		t->errors += t->nconns;
		publish(t);
		while (atomic_load(&b->phase) != PH_DONE)
			usleep(10000);
		return NULL;
	}
	if (cap < 1)
		cap = 1;
	t->seen_phase = -1;
	for (;;) {
		int phase =
			atomic_load_explicit(&b->phase, memory_order_acquire);
		uint64_t now = now_mono_ns();

		if (phase != t->seen_phase) {
			t->seen_phase = phase;
			if (phase == PH_PREPARE || phase == PH_RUN)
				for (uint32_t i = 0; i < t->nconns; i++)
					o->wl->issue(t, &t->conns[i], phase,
						     now);
		}
		if (phase == PH_DONE)
			break;
		bool may_connect = phase == PH_CONNECT ||
				   (connect_in_run && phase == PH_RUN);
		while (may_connect && t->connecting < cap &&
		       t->next_connect < t->nconns)
			conn_start(t, &t->conns[t->next_connect++], now);
		if (t->nretry && may_connect) {
			for (uint32_t i = 0; i < t->nconns && t->nretry; i++) {
				struct bench_conn *c = &t->conns[i];
				if (c->state != CS_RETRY || c->due_ns > now ||
				    t->connecting >= cap)
					continue;
				t->nretry--;
				conn_start(t, c, now);
			}
		}
		if (o->wl->tick)
			o->wl->tick(t, phase, now);
		for (uint32_t i = 0; i < t->ndirty; i++) {
			t->dirty[i]->dirty = false;
			flush_conn(t, t->dirty[i]);
		}
		t->ndirty = 0;
		publish(t);

		struct __kernel_timespec ts = { .tv_nsec = 1000000 };
		struct io_uring_cqe *cqe;
		io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, &ts, NULL);
		unsigned head, n = 0;
		now = now_mono_ns();
		io_uring_for_each_cqe (&t->ring, head, cqe) {
			handle_cqe(t, cqe, now);
			if (++n % 64 == 0)
				now = now_mono_ns();
		}
		io_uring_cq_advance(&t->ring, n);
	}
	publish(t);
	return NULL;
}

static void thread_free(struct bench_thread *t)
{
	if (t->ring_ok)
		io_uring_queue_exit(&t->ring);
	for (uint32_t i = 0; t->conns && i < t->nconns; i++) {
		struct bench_conn *c = &t->conns[i];
		if (c->fd >= 0)
			close(c->fd);
		buf_free(&c->out);
		buf_free(&c->inflight);
	}
	if (t->b->o.wl->thread_free)
		t->b->o.wl->thread_free(t);
	free(t->conns);
	free(t->dirty);
	free(t->br);
	free(t->bufs);
}

/*
 * The CPU time of @pid in seconds, to the nanosecond: its process CPU clock,
 * which counts every thread it has had, those that have exited too (an
 * io_uring worker, say); a sum over /proc/<pid>/task would lose theirs.
 * -1 if unreadable.
 */
static double proc_cpu_precise(int pid)
{
	struct timespec ts;
	clockid_t clk;

	if (clock_getcpuclockid((pid_t)pid, &clk) || clock_gettime(clk, &ts))
		return -1;
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The server's CPU time and memory, from /proc/<pid>/{stat,status}; the CPU
 * time from its CPU clock when readable (clock ticks of 10 ms are too
 * coarse for a burst like nccl-init), else utime + stime of stat.
 */
struct proc_sample {
	bool ok;
	double cpu_s;
	uint64_t rss_kb;
	uint64_t hwm_kb;
};

static struct proc_sample proc_sample(int pid)
{
	struct proc_sample s = { 0 };
	char path[64], line[4096];
	FILE *f;

	if (pid <= 0)
		return s;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return s;
	size_t n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = '\0';
	char *p = strrchr(line, ')');
	unsigned long long ut = 0, st = 0;
	if (!p ||
	    sscanf(p + 2,
		   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
		   &st) != 2)
		return s;
	s.cpu_s = proc_cpu_precise(pid);
	if (s.cpu_s < 0)
		s.cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return s;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long kb;
		if (sscanf(line, "VmRSS: %llu", &kb) == 1)
			s.rss_kb = kb;
		else if (sscanf(line, "VmHWM: %llu", &kb) == 1)
			s.hwm_kb = kb;
	}
	fclose(f);
	s.ok = true;
	return s;
}

/*
 * The write log's counters of a ringstore (--server-metrics HOST:PORT): its
 * control plane's GET /metrics, two samples of it. Zeros (ok false) when it
 * cannot be read.
 */
struct log_sample {
	bool ok;
	double syncs;
	double bytes;
};

static struct log_sample log_sample(const char *addr)
{
	struct log_sample s = { 0 };
	static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
	char host[256], *text = NULL, *p;
	size_t len = 0, cap = 0;
	const char *colon;
	int fd;

	if (!addr || !(colon = strrchr(addr, ':')) ||
	    (size_t)(colon - addr) >= sizeof(host))
		return s;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	fd = net_connect(host, (uint16_t)atoi(colon + 1), NULL, 5000);
	if (fd < 0)
		return s;
	if (write(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1) {
		for (;;) {
			if (len + 4096 + 1 > cap) {
				char *t = realloc(text, cap = 2 * cap + 8192);
				if (!t)
					break;
				text = t;
			}
			ssize_t n = read(fd, text + len, cap - len - 1);
			if (n <= 0)
				break;
			len += (size_t)n;
		}
	}
	close(fd);
	if (!text)
		return s;
	text[len] = '\0';
	static const char syncs[] = "\nringstore_log_syncs_total ";
	static const char bytes[] = "\nringstore_log_written_bytes_total ";
	if ((p = strstr(text, syncs)))
		s.syncs = strtod(p + sizeof(syncs) - 1, NULL);
	if ((p = strstr(text, bytes))) {
		s.bytes = strtod(p + sizeof(bytes) - 1, NULL);
		s.ok = true;
	}
	free(text);
	return s;
}

/*
 * TcpExt ListenOverflows from /proc/net/netstat: SYNs or handshake ACKs the
 * kernel dropped because some listener's accept queue was full (host-wide,
 * so only meaningful while nothing else opens connections). 0 if unknown.
 */
static uint64_t listen_overflows(void)
{
	char names[4096], vals[4096];
	uint64_t result = 0;
	FILE *f = fopen("/proc/net/netstat", "r");

	if (!f)
		return 0;
	while (fgets(names, sizeof(names), f) && fgets(vals, sizeof(vals), f)) {
		if (strncmp(names, "TcpExt:", 7))
			continue;
		char *sn, *sv;
		char *n = strtok_r(names, " \n", &sn);
		char *v = strtok_r(vals, " \n", &sv);
		while (n && v) {
			if (!strcmp(n, "ListenOverflows"))
				result = strtoull(v, NULL, 10);
			n = strtok_r(NULL, " \n", &sn);
			v = strtok_r(NULL, " \n", &sv);
		}
	}
	fclose(f);
	return result;
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) /
		       1e6;
}

const struct bench_opts bench_fallback = {
	.conns = 64,
	.pipeline = 8,
	.keys = 16,
	.key_bytes = 16,
	.value_bytes = 64,
	.keyspace = 10000,
	.rounds = 1,
};

void bench_opts_fill(struct bench_opts *o, const struct bench_opts *d)
{
	if (!o->conns)
		o->conns = d->conns;
	if (!o->pipeline)
		o->pipeline = d->pipeline;
	if (!o->keys)
		o->keys = d->keys;
	if (!o->key_bytes)
		o->key_bytes = d->key_bytes;
	if (o->value_bytes == UINT32_MAX && d->value_bytes)
		o->value_bytes = d->value_bytes;
	if (!o->keyspace)
		o->keyspace = d->keyspace;
	if (!o->rounds)
		o->rounds = d->rounds;
}

static int resolve(const struct bench_opts *o)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	char port[8];

	snprintf(port, sizeof(port), "%u", o->port);
	int ret = getaddrinfo(o->host, port, &hints, &res);
	if (ret)
		return -EHOSTUNREACH;
	memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
	g_addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/*
 * Before opening thousands of connections, one: a server that is not there
 * should be an error at once, not minutes of refused connects each retried
 * BENCH_MAX_RETRIES times with backoff. A refused connect is retried for up
 * to PROBE_WAIT_MS (100 sleeps of 20 ms) for a server that is still
 * starting. The probe connection closes without a byte sent.
 */
#define PROBE_WAIT_MS 2000

static int probe(const struct bench_opts *o)
{
	const struct timeval limit = { .tv_sec = 10 };

	for (int slept = 0;; slept += 20) {
		int fd =
			socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int err;

		if (fd < 0)
			return -errno;
		/* A host that drops SYNs: give up after 10 s, not the
		 * kernel's two minutes (a timed-out connect says EINPROGRESS) */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
		err = connect(fd, (struct sockaddr *)&g_addr, g_addrlen) ? errno
									 : 0;
		if (err == EINPROGRESS)
			err = ETIMEDOUT;
		close(fd);
		if (err != ECONNREFUSED || slept >= PROBE_WAIT_MS ||
		    g_interrupted) {
			if (err)
				fprintf(stderr,
					"ringstore-bench: cannot connect to "
					"%s port %u: %s%s\n",
					o->host, o->port, strerror(err),
					err == ECONNREFUSED
						? " (nothing listens there: "
						  "start the server first, or "
						  "give its --addr)"
						: "");
			return -err;
		}
		usleep(20 * 1000);
	}
}

static void on_sigint(int sig)
{
	(void)sig;
	g_interrupted = 1;
}

struct totals {
	uint64_t ready, dead, ops, keys, done;
};

static struct totals sum_pub(const struct bench *b)
{
	struct totals s = { 0 };

	for (uint32_t i = 0; i < b->o.threads; i++) {
		struct bench_pub *p = &b->threads[i].pub;
		s.ready +=
			atomic_load_explicit(&p->ready, memory_order_relaxed);
		s.dead += atomic_load_explicit(&p->dead, memory_order_relaxed);
		s.ops += atomic_load_explicit(&p->ops, memory_order_relaxed);
		s.keys += atomic_load_explicit(&p->keys, memory_order_relaxed);
		s.done += atomic_load_explicit(&p->done, memory_order_relaxed);
	}
	return s;
}

static const char *phase_name(int p)
{
	static const char *const n[] = { "connect", "prepare", "run", "drain",
					 "done" };
	return p >= 0 && p <= PH_DONE ? n[p] : "?";
}

/* Progress on a terminal, at most once a second. */
static void progress(struct bench *b, uint64_t now, uint64_t *last_ns,
		     uint64_t *last_ops, uint32_t total)
{
	if (!b->o.progress || now - *last_ns < 1000000000ull)
		return;
	struct totals s = sum_pub(b);
	double dt = (double)(now - *last_ns) / 1e9;
	fprintf(stderr,
		"\r%-8s conns %llu/%u dead %llu  ops %llu  %.0f ops/s  done %llu   ",
		phase_name(atomic_load(&b->phase)), (unsigned long long)s.ready,
		total, (unsigned long long)s.dead, (unsigned long long)s.ops,
		(double)(s.ops - *last_ops) / dt, (unsigned long long)s.done);
	*last_ns = now;
	*last_ops = s.ops;
}

/* A condition the main thread polls while the bench threads work. */
typedef bool (*wait_cond)(struct bench *b, uint32_t total);

static bool all_connected(struct bench *b, uint32_t total)
{
	struct totals s = sum_pub(b);
	return s.ready + s.dead >= total;
}

/*
 * The prepare phase is over: done, or a connection died during it. Each
 * workload prepares on particular connections (connection 0 writes the key
 * space; fanout's waiters each register), so one that died may have been
 * one it needed: the run cannot go on (a server that closes them, say).
 */
static bool prepared(struct bench *b, uint32_t total)
{
	(void)total;
	/* seq_cst: pairs with the workloads' atomic_fetch_sub of prep_left. */
	return atomic_load(&b->prep_left) <= 0 ||
	       sum_pub(b).dead > b->prep_dead;
}

/*
 * Wait until @cond holds (checked every 5 ms, with the progress line) or
 * @limit_s passes or SIGINT arrives. Returns true if the condition held.
 */
static bool wait_for(struct bench *b, wait_cond cond, double limit_s,
		     uint32_t total)
{
	uint64_t t0 = now_mono_ns(), last = t0, last_ops = 0;

	while (!cond(b, total)) {
		uint64_t now = now_mono_ns();
		if (g_interrupted || (double)(now - t0) / 1e9 > limit_s)
			return false;
		progress(b, now, &last, &last_ops, total);
		usleep(5000);
	}
	return true;
}

static void raise_nofile(uint32_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < (rlim_t)need + 64)
		log_warn("bench: RLIMIT_NOFILE %llu < %u connections + 64; "
			 "raise the hard limit",
			 (unsigned long long)rl.rlim_cur, need);
}

int bench_run(struct bench *b)
{
	struct bench_opts *o = &b->o;
	const struct bench_workload *wl = o->wl;
	int ret;

	if (resolve(o) < 0) {
		fprintf(stderr, "ringstore-bench: cannot resolve %s\n",
			o->host);
		return -EHOSTUNREACH;
	}
	signal(SIGINT, on_sigint);
	if (probe(o) < 0)
		return 1;
	uint32_t total = wl->total_conns ? wl->total_conns(o) : o->conns;
	if (o->threads > total)
		o->threads = total;
	g_nsrc = o->src_addrs;
	if (!g_nsrc && total > BENCH_PORTS_PER_SRC)
		g_nsrc =
			(total + BENCH_PORTS_PER_SRC - 1) / BENCH_PORTS_PER_SRC;
	raise_nofile(total);
	signal(SIGPIPE, SIG_IGN);

	b->value = malloc(o->value_bytes + 1);
	if (!b->value)
		return -ENOMEM;
	memset(b->value, 'v', o->value_bytes + 1);
	b->run_id =
		(now_mono_ns() ^ ((uint64_t)getpid() << 20)) % 100000000000ull;
	b->threads = calloc(o->threads, sizeof(*b->threads));
	if (!b->threads)
		return -ENOMEM;

	uint32_t base = 0;
	for (uint32_t i = 0; i < o->threads; i++) {
		struct bench_thread *t = &b->threads[i];
		t->b = b;
		t->id = (int)i;
		t->base = base;
		t->nconns = total / o->threads + (i < total % o->threads);
		t->rng = 0x9E3779B97F4A7C15ull * (i + 1) ^ b->run_id;
		t->conns = calloc(t->nconns, sizeof(*t->conns));
		t->dirty = calloc(t->nconns, sizeof(*t->dirty));
		if (!t->conns || !t->dirty)
			return -ENOMEM;
		hist_init(&t->lat);
		for (uint32_t k = 0; k < t->nconns; k++) {
			t->conns[k].fd = -1;
			t->conns[k].id = base + k;
			t->conns[k].idx = k;
		}
		base += t->nconns;
	}

	bool in_run = wl->connects_in_run;
	struct proc_sample s_before = proc_sample(o->server_pid),
			   s_idle = { 0 };
	uint64_t lo0 = listen_overflows();
	uint64_t t_start = now_mono_ns(), t_run0, t_run1;
	double connect_s = 0, c_cpu0, c_cpu1;
	struct proc_sample s_run0, s_run1;
	struct log_sample l_run0 = log_sample(o->server_metrics), l_run1;
	bool timed_out = false, failed = false;

	/*
	 * Every store of the phase (seq_cst) pairs with the acquire load in
	 * thread_main: a thread that sees a phase sees what came before it.
	 */
	atomic_store(&b->phase, in_run ? PH_RUN : PH_CONNECT);
	s_run0 = s_before;
	c_cpu0 = self_cpu_s();
	for (uint32_t i = 0; i < o->threads; i++) {
		ret = pthread_create(&b->threads[i].th, NULL, thread_main,
				     &b->threads[i]);
		if (ret) {
			fprintf(stderr, "ringstore-bench: pthread_create: %s\n",
				strerror(ret));
			return -ret;
		}
	}
	if (!in_run) {
		timed_out |=
			!wait_for(b, all_connected, 120 + total / 200.0, total);
		connect_s = (double)(now_mono_ns() - t_start) / 1e9;
		usleep(300000);
		s_idle = proc_sample(o->server_pid);
		int64_t prep = wl->prep_count ? wl->prep_count(o) : 0;
		if (prep > 0 && !timed_out) {
			b->prep_dead = sum_pub(b).dead;
			atomic_store(&b->prep_left, prep);
			atomic_store(&b->phase, PH_PREPARE);
			timed_out |= !wait_for(b, prepared, 300, total);
			if (!timed_out && atomic_load(&b->prep_left) > 0) {
				fprintf(stderr, "ringstore-bench: a connection "
						"closed while the workload was "
						"prepared; nothing was "
						"measured (the server's log "
						"says why)\n");
				failed = true;
			}
		}
		s_run0 = proc_sample(o->server_pid);
		l_run0 = log_sample(o->server_metrics);
		c_cpu0 = self_cpu_s();
		atomic_store(&b->phase, PH_RUN);
	}
	t_run0 = in_run ? t_start : now_mono_ns();

	/* The measured window. */
	uint64_t last = t_run0, last_ops = 0;
	uint64_t want_done = wl->done_target ? wl->done_target(o, total) : 0;
	double limit = o->duration;
	if (want_done)
		limit = o->duration > 60 ? o->duration : 60 + total / 500.0;
	for (;;) {
		uint64_t now = now_mono_ns();
		struct totals s = sum_pub(b);
		if (g_interrupted || timed_out || failed)
			break;
		if (s.dead >= total)
			break;
		if (want_done) {
			if (s.done + s.dead >= want_done)
				break;
		} else if (o->ops && s.ops >= o->ops) {
			break;
		}
		if ((double)(now - t_run0) / 1e9 >= limit) {
			if (want_done)
				timed_out = true;
			if (!o->ops || want_done)
				break;
		}
		progress(b, now, &last, &last_ops, total);
		/* A window that ends on an event is polled more often. */
		usleep(want_done ? 500 : 2000);
	}
	t_run1 = now_mono_ns();
	s_run1 = proc_sample(o->server_pid);
	l_run1 = log_sample(o->server_metrics);
	c_cpu1 = self_cpu_s();
	if (in_run)
		s_idle = s_run1;
	atomic_store(&b->phase, PH_DRAIN);
	usleep(100000);
	struct proc_sample s_end = proc_sample(o->server_pid);
	uint64_t overflows = listen_overflows() - lo0;
	atomic_store(&b->phase, PH_DONE);
	for (uint32_t i = 0; i < o->threads; i++)
		pthread_join(b->threads[i].th, NULL);
	if (o->progress)
		fprintf(stderr, "\n");

	/* Merge. */
	static struct hist lat;
	uint64_t ops = 0, keys = 0, errors = 0, resets = 0, done = 0, dead = 0;
	uint64_t ready = 0, empty = 0, untimed = 0, last_conn = 0,
		 last_done = 0;
	uint64_t rx = 0, tx = 0;
	hist_init(&lat);
	for (uint32_t i = 0; i < o->threads; i++) {
		struct bench_thread *t = &b->threads[i];
		hist_merge(&lat, &t->lat);
		ops += t->ops;
		keys += t->keys;
		errors += t->errors;
		resets += t->resets;
		done += t->done;
		dead += t->dead;
		ready += t->ready;
		empty += t->empty_pops;
		untimed += t->untimed_ops;
		rx += t->rx_bytes;
		tx += t->tx_bytes;
		if (t->last_connect_ns > last_conn)
			last_conn = t->last_connect_ns;
		if (t->last_done_ns > last_done)
			last_done = t->last_done_ns;
	}
	double secs = (double)(t_run1 - t_run0) / 1e9;
	double srv_cpu = s_run0.ok && s_run1.ok ? s_run1.cpu_s - s_run0.cpu_s
						: NAN;
	double cli_cpu = c_cpu1 - c_cpu0;
	double rdzv_ms = NAN, rate = NAN, fan_ms = NAN;
	uint64_t fire = atomic_load(&b->fire_ns);
	if (in_run) {
		if (last_done > t_start)
			rdzv_ms = (double)(last_done - t_start) / 1e6;
		if (last_conn > t_start)
			rate = (double)total /
			       ((double)(last_conn - t_start) / 1e9);
		connect_s = last_conn > t_start
				    ? (double)(last_conn - t_start) / 1e9
				    : NAN;
	} else if (connect_s > 0) {
		rate = (double)total / connect_s;
	}
	if (fire && last_done > fire)
		fan_ms = (double)(last_done - fire) / 1e6;
	double rss_per_conn = NAN;
	if (s_before.ok && s_idle.ok && total)
		rss_per_conn =
			((double)s_idle.rss_kb - (double)s_before.rss_kb) *
			1024.0 / total;

#define JNUM(x) (isfinite(x) ? (x) : -1.0)
	if (o->json) {
		printf("{\"workload\": \"%s\", \"label\": \"%s\", \"conns\": %u, "
		       "\"total_conns\": %u, \"threads\": %u, \"cpus\": %u, "
		       "\"pipeline\": %u, "
		       "\"keys_per_req\": %u, \"key_bytes\": %u, "
		       "\"value_bytes\": %u, \"keyspace\": %llu, ",
		       wl->name, o->label ? o->label : "", o->conns, total,
		       o->threads, cpus_affinity(), o->pipeline, o->keys,
		       o->key_bytes, o->value_bytes,
		       (unsigned long long)o->keyspace);
		printf("\"seconds\": %.6f, \"ops\": %llu, \"keys\": %llu, "
		       "\"untimed_ops\": %llu, \"ops_per_s\": %.1f, "
		       "\"keys_per_s\": %.1f, \"rx_bytes\": %llu, "
		       "\"tx_bytes\": %llu, ",
		       secs, (unsigned long long)ops, (unsigned long long)keys,
		       (unsigned long long)untimed, ops / secs, keys / secs,
		       (unsigned long long)rx, (unsigned long long)tx);
		printf("\"lat_us\": {\"count\": %llu, \"mean\": %.2f, "
		       "\"p50\": %.2f, \"p99\": %.2f, \"p999\": %.2f, "
		       "\"max\": %.2f}, ",
		       (unsigned long long)lat.count, hist_mean(&lat) / 1e3,
		       hist_percentile(&lat, 50) / 1e3,
		       hist_percentile(&lat, 99) / 1e3,
		       hist_percentile(&lat, 99.9) / 1e3,
		       (lat.count ? lat.max : 0) / 1e3);
		printf("\"errors\": %llu, \"resets\": %llu, \"dead\": %llu, "
		       "\"ready\": %llu, \"done\": %llu, \"timed_out\": %s, "
		       "\"empty_pops\": %llu, \"listen_overflows\": %llu, "
		       "\"connect_s\": %.4f, "
		       "\"connect_rate\": %.1f, \"rendezvous_ms\": %.3f, "
		       "\"fanout_last_wake_ms\": %.3f, ",
		       (unsigned long long)errors, (unsigned long long)resets,
		       (unsigned long long)dead, (unsigned long long)ready,
		       (unsigned long long)done, timed_out ? "true" : "false",
		       (unsigned long long)empty, (unsigned long long)overflows,
		       JNUM(connect_s), JNUM(rate), JNUM(rdzv_ms),
		       JNUM(fan_ms));
		printf("\"server\": {\"pid\": %d, \"cpu_s\": %.4f, "
		       "\"cpu_share\": %.4f, \"cpu_s_per_mop\": %.4f, "
		       "\"cpu_s_per_mkey\": %.4f, \"rss_before_kb\": %llu, "
		       "\"rss_idle_kb\": %llu, \"rss_end_kb\": %llu, "
		       "\"hwm_kb\": %llu, \"rss_per_conn_bytes\": %.1f, "
		       "\"log_syncs\": %.0f, \"log_bytes\": %.0f}, ",
		       o->server_pid, JNUM(srv_cpu), JNUM(srv_cpu / secs),
		       JNUM(ops ? srv_cpu / (ops / 1e6) : NAN),
		       JNUM(keys ? srv_cpu / (keys / 1e6) : NAN),
		       (unsigned long long)s_before.rss_kb,
		       (unsigned long long)s_idle.rss_kb,
		       (unsigned long long)s_end.rss_kb,
		       (unsigned long long)s_end.hwm_kb, JNUM(rss_per_conn),
		       JNUM(l_run0.ok && l_run1.ok ? l_run1.syncs - l_run0.syncs
						   : NAN),
		       JNUM(l_run0.ok && l_run1.ok ? l_run1.bytes - l_run0.bytes
						   : NAN));
		printf("\"client\": {\"cpu_s\": %.4f, \"cpu_share\": %.4f}}\n",
		       cli_cpu, cli_cpu / secs);
	} else {
		printf("workload %s: %u conns, %u threads, pipeline %u, %u keys/req, "
		       "%u B keys, %u B values\n",
		       wl->name, total, o->threads, o->pipeline, o->keys,
		       o->key_bytes, o->value_bytes);
		printf("  %.2f s: %llu ops (%.0f ops/s), %llu keys (%.0f keys/s), "
		       "%llu errors, %llu resets\n",
		       secs, (unsigned long long)ops, ops / secs,
		       (unsigned long long)keys, keys / secs,
		       (unsigned long long)errors, (unsigned long long)resets);
		printf("  latency us: p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f "
		       "(%llu samples)\n",
		       hist_percentile(&lat, 50) / 1e3,
		       hist_percentile(&lat, 99) / 1e3,
		       hist_percentile(&lat, 99.9) / 1e3,
		       (lat.count ? lat.max : 0) / 1e3,
		       (unsigned long long)lat.count);
		printf("  bytes in the window: %llu received, %llu sent\n",
		       (unsigned long long)rx, (unsigned long long)tx);
		printf("  connect %.3f s (%.0f conn/s), %llu listen-queue "
		       "overflows (host-wide)\n",
		       connect_s, rate, (unsigned long long)overflows);
		if (in_run)
			printf("  rendezvous: %.1f ms from first connect to last "
			       "release, %llu/%u ranks released\n",
			       rdzv_ms, (unsigned long long)done, total);
		if (fire)
			printf("  fanout: last of %llu/%u waiters woke %.3f ms "
			       "after the SET\n",
			       (unsigned long long)done, o->conns, fan_ms);
		if (empty)
			printf("  queue: %llu empty pops\n",
			       (unsigned long long)empty);
		if (s_run1.ok)
			printf("  server: %.3f CPU s (%.0f%% of a core), "
			       "%.4f s per M ops, %.4f s per M keys; RSS %llu kB "
			       "before, %llu kB connected (%.0f B/conn), peak %llu kB\n",
			       srv_cpu, 100 * srv_cpu / secs,
			       ops ? srv_cpu / (ops / 1e6) : NAN,
			       keys ? srv_cpu / (keys / 1e6) : NAN,
			       (unsigned long long)s_before.rss_kb,
			       (unsigned long long)s_idle.rss_kb, rss_per_conn,
			       (unsigned long long)s_end.hwm_kb);
		printf("  client: %.3f CPU s (%.0f%% of a core)%s\n", cli_cpu,
		       100 * cli_cpu / secs, timed_out ? "  [TIMED OUT]" : "");
	}
	/* A run in which every connection failed measured nothing (said
	 * once: a failed prepare has said it already). */
	bool all_dead = sum_pub(b).dead >= total;
	if (all_dead && !failed)
		fprintf(stderr,
			"ringstore-bench: all %u connections to %s "
			"port %u failed; nothing was measured\n",
			total, o->host, o->port);
	for (uint32_t i = 0; i < o->threads; i++)
		thread_free(&b->threads[i]);
	free(b->threads);
	free(b->value);
	return timed_out || g_interrupted || all_dead || failed ? 1 : 0;
}
