/* SPDX-License-Identifier: MIT */
/*
 * admit.c - admission of accepted sockets (see admit.h).
 */
#include "admit.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "control.h"
#include "log.h"
#include "net.h"
#include "now.h"
#include "server.h"
#include "xmsg.h"

/* The peer as an IPv6 address (IPv4 v4-mapped), kept for diagnostics. */
static void peer_addr(int fd, struct sockaddr_in6 *out)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	memset(out, 0, sizeof(*out));
	if (!getpeername(fd, (struct sockaddr *)&ss, &sl))
		net_to_v6((struct sockaddr *)&ss, out);
}

/* Count a refused connection; log it at most one line a second. */
static void log_reject(struct admit *a, const struct sockaddr_in6 *peer,
		       enum stats_close why)
{
	uint64_t now = now_mono_ms();
	char name[NET_ADDRSTRLEN];

	stat_add(&a->t->stats->rejected, 1);
	stat_add(&a->t->stats->closed[why], 1);
	if (now - a->reject_log_ms < 1000) {
		a->rejects_unlogged++;
		return;
	}
	net_format_addr((const struct sockaddr *)peer, name, sizeof(name));
	log_warn("refusing %s: %s (%s); %llu more refused since the last "
		 "such line",
		 name, stats_close_text(why), stats_close_id(why),
		 (unsigned long long)a->rejects_unlogged);
	a->reject_log_ms = now;
	a->rejects_unlogged = 0;
}

static bool allowed(const struct server_config *cfg,
		    const struct sockaddr_in6 *peer)
{
	if (!cfg->nallow)
		return true;
	for (uint32_t i = 0; i < cfg->nallow; i++)
		if (net_cidr_match(&cfg->allow[i], peer))
			return true;
	return false;
}

void admit_store(struct admit *a, int fd)
{
	struct server *srv = a->t->srv;
	struct sockaddr_in6 peer;
	uint64_t n;

	if (a->t->stopping) {
		close(fd);
		return;
	}
	peer_addr(fd, &peer);
	if (!allowed(&srv->cfg, &peer)) {
		log_reject(a, &peer, STATS_CLOSE_NOT_ALLOWED);
		close(fd);
		return;
	}
	n = atomic_fetch_add_explicit(&srv->conns, 1, memory_order_relaxed);
	if (srv->cfg.max_conns && n >= srv->cfg.max_conns) {
		atomic_fetch_sub_explicit(&srv->conns, 1, memory_order_relaxed);
		log_reject(a, &peer, STATS_CLOSE_CONN_LIMIT);
		close(fd);
		return;
	}
	net_set_nodelay(fd);
	if (!conn_open(a->t, fd, &peer, NULL, NULL)) {
		atomic_fetch_sub_explicit(&srv->conns, 1, memory_order_relaxed);
		log_error("out of memory accepting a connection");
		return;
	}
	stat_add(&a->t->stats->accepted, 1);
	stat_add(&a->t->stats->active, 1);
}

/* A control-plane client: a guest of the control plane's HTTP. */
static void admit_control(struct admit *a, int fd)
{
	struct conn_table *t = a->t;
	struct sockaddr_in6 none = { 0 };
	struct control_conn *cc;

	if (t->stopping) {
		close(fd);
		return;
	}
	if (t->nguests == CONN_MAX_GUESTS) {
		log_warn("refusing a control-plane connection: %d are open",
			 CONN_MAX_GUESTS);
		close(fd);
		return;
	}
	cc = control_conn_create(t->srv->control);
	if (!cc) {
		close(fd);
	} else if (conn_open(t, fd, &none, &control_guest_ops, cc)) {
		stat_add(&t->stats->control_conns, 1);
		return;
	}
	log_error("out of memory accepting a control connection");
}

void admit_accepted(struct admit *a, enum io_listener l, int fd)
{
	struct server *srv = a->t->srv;
	uint32_t target;

	if (l == IO_LISTEN_CONTROL) {
		admit_control(a, fd);
		return;
	}
	/*
	 * A single acceptor spreads new sockets round robin over the
	 * reactors: the fd travels in a message to its new owner, which
	 * admits it.
	 */
	if (!srv->cfg.single_acceptor || srv->nreactors == 1) {
		admit_store(a, fd);
		return;
	}
	target = a->next_target++ % srv->nreactors;
	struct io_msg m = { .kind = IO_MSG_CONN, .arg = fd };
	if (target == a->t->reactor || xmsg_post(a->t, target, &m))
		admit_store(a, fd);
}

bool admit_accept_failed(struct admit *a, enum io_listener l, int err)
{
	bool out_of_fds = err == -EMFILE || err == -ENFILE || err == -ENOMEM ||
			  err == -ENOBUFS;

	if (l == IO_LISTEN_STORE)
		stat_add(&a->t->stats->accept_errors, 1);
	if (out_of_fds) {
		/* Out of descriptors: back off rather than spin. */
		log_warn("accept: %s; pausing accepts for %d ms",
			 strerror(-err), IO_ACCEPT_BACKOFF_MS);
		return true;
	}
	if (err != -ECANCELED)
		log_debug("accept: %s", strerror(-err));
	return false;
}
