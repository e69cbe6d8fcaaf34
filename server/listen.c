/* SPDX-License-Identifier: MIT */
/*
 * listen.c - listening sockets, one store per port (see listen.h).
 *
 * The other listeners on a port are found with one NETLINK_SOCK_DIAG dump
 * of the TCP sockets in LISTEN state per address family; they are told from
 * ours by inode number. The same dump, with /proc/<pid>/fd, names the
 * process that holds a busy port in the error message.
 */
#include "listen.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "net.h"

#define TCP_LISTEN_STATE 10 /* TCP_LISTEN in the kernel's enum */
#define MAX_FOREIGN 16

/* A listener's address as 16 bytes (IPv4 as v4-mapped). */
struct laddr {
	uint8_t a[16];
};

static bool laddr_any(const struct laddr *l)
{
	static const uint8_t zero[16];
	uint8_t any4[16];

	net_v4_mapped(any4, zero); /* ::ffff:0.0.0.0 */
	return !memcmp(l->a, zero, 16) || !memcmp(l->a, any4, 16);
}

/* Would a connection to one of these addresses possibly reach the other? */
static bool laddr_overlap(const struct laddr *x, const struct laddr *y)
{
	return laddr_any(x) || laddr_any(y) || !memcmp(x->a, y->a, 16);
}

static int sock_laddr(int fd, struct laddr *l)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 a6;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -errno;
	net_to_v6((struct sockaddr *)&ss, &a6);
	memcpy(l->a, &a6.sin6_addr, 16);
	return 0;
}

/*
 * The inodes of TCP listeners on @port whose address overlaps @mine and
 * that are not in @ours: up to @max into @out. Returns their number or
 * -errno.
 */
static int foreign_listeners(uint16_t port, const struct laddr *mine,
			     const ino_t *ours, uint32_t nours, ino_t *out,
			     int max)
{
	static const int families[] = { AF_INET, AF_INET6 };
	int found = 0;

	for (size_t f = 0; f < 2; f++) {
		struct {
			struct nlmsghdr nlh;
			struct inet_diag_req_v2 req;
		} msg = {
			.nlh = { .nlmsg_len = sizeof(msg),
				 .nlmsg_type = SOCK_DIAG_BY_FAMILY,
				 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
			.req = { .sdiag_family = (uint8_t)families[f],
				 .sdiag_protocol = IPPROTO_TCP,
				 .idiag_states = 1u << TCP_LISTEN_STATE },
		};
		long buf[8192 / sizeof(long)];
		bool done = false;
		int nl, err = 0;

		nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
			    NETLINK_SOCK_DIAG);
		if (nl < 0)
			return -errno;
		if (send(nl, &msg, sizeof(msg), 0) < 0)
			err = -errno;
		while (!err && !done) {
			ssize_t n = recv(nl, buf, sizeof(buf), 0);
			struct nlmsghdr *h = (struct nlmsghdr *)buf;

			if (n < 0) {
				err = errno == EINTR ? 0 : -errno;
				continue;
			}
			for (; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
				if (h->nlmsg_type == NLMSG_DONE) {
					done = true;
					break;
				}
				if (h->nlmsg_type == NLMSG_ERROR) {
					struct nlmsgerr *e = NLMSG_DATA(h);
					err = e->error ? e->error : -EIO;
					break;
				}
				struct inet_diag_msg *d = NLMSG_DATA(h);
				struct laddr theirs;
				bool mine_too = false;

				if (ntohs(d->id.idiag_sport) != port)
					continue;
				if (d->idiag_family == AF_INET)
					net_v4_mapped(theirs.a,
						      d->id.idiag_src);
				else
					memcpy(theirs.a, d->id.idiag_src, 16);
				for (uint32_t i = 0; i < nours; i++)
					mine_too |= ours[i] == d->idiag_inode;
				if (!mine_too && laddr_overlap(mine, &theirs) &&
				    found < max)
					out[found++] = d->idiag_inode;
			}
		}
		close(nl);
		/* A kernel without IPv6 has nothing to report for it. */
		if (err && !(families[f] == AF_INET6 && err == -ENOENT))
			return err;
	}
	return found;
}

/* "pid N (comm)" of the process with a descriptor for socket @ino. */
static bool inode_owner(ino_t ino, char *out, size_t len)
{
	char want[64], path[300], link[64];
	pid_t self = getpid();
	struct dirent *p;
	DIR *proc = opendir("/proc");
	bool found = false;

	if (!proc)
		return false;
	snprintf(want, sizeof(want), "socket:[%lu]", (unsigned long)ino);
	while (!found && (p = readdir(proc))) {
		char *end;
		long pid = strtol(p->d_name, &end, 10);
		struct dirent *f;
		DIR *fds;

		if (*end || pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/fd", pid);
		if (!(fds = opendir(path)))
			continue;
		while (!found && (f = readdir(fds))) {
			ssize_t n;

			snprintf(path, sizeof(path), "/proc/%ld/fd/%s", pid,
				 f->d_name);
			n = readlink(path, link, sizeof(link) - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			found = !strcmp(link, want);
		}
		closedir(fds);
		if (found) {
			char comm[32] = "?";
			FILE *cf;

			snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
			if ((cf = fopen(path, "r"))) {
				if (fgets(comm, sizeof(comm), cf))
					comm[strcspn(comm, "\n")] = '\0';
				fclose(cf);
			}
			snprintf(out, len, "pid %ld (%s)", pid, comm);
		}
	}
	closedir(proc);
	return found;
}

void listen_port_holder(uint16_t port, char *out, size_t len)
{
	struct laddr any = { { 0 } };
	ino_t inos[MAX_FOREIGN];
	int n = foreign_listeners(port, &any, NULL, 0, inos, MAX_FOREIGN);

	out[0] = '\0';
	for (int i = 0; i < n; i++)
		if (inode_owner(inos[i], out, len))
			return;
}

/*
 * Steer each new connection to one of the group's first @n sockets (ours):
 * index = hash(source address, source port) mod n. The program sees the
 * packet with its data at the TCP payload, so headers are read relative to
 * the network header (SKF_NET_OFF): IPv4 with its variable header length,
 * IPv6 with the 40-byte fixed header (a SYN carries no extension headers in
 * practice; if one did, the hash would read other bytes and still pick one
 * of ours).
 */
static int attach_steering(int fd, uint32_t n)
{
	struct sock_filter code[] = {
		/* A = IP version */
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)SKF_NET_OFF),
		BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 4, 0, 5),
		/* IPv4: M[0] = source address; A = source port */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12),
		BPF_STMT(BPF_ST, 0),
		BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, (uint32_t)SKF_NET_OFF),
		BPF_STMT(BPF_LD | BPF_H | BPF_IND, (uint32_t)SKF_NET_OFF),
		BPF_JUMP(BPF_JMP | BPF_JA, 3, 0, 0),
		/* IPv6: M[0] = last word of the source address; A = port */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 20),
		BPF_STMT(BPF_ST, 0),
		BPF_STMT(BPF_LD | BPF_H | BPF_ABS, (uint32_t)SKF_NET_OFF + 40),
		/* A = ((port ^ addr) * golden) >> 16, mod n */
		BPF_STMT(BPF_LDX | BPF_MEM, 0),
		BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
		BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 0x9e3779b1u),
		BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]),
				   .filter = code };

	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
		       sizeof(prog)))
		return -errno;
	return 0;
}

int listen_open(const char *host, uint16_t *port, int backlog, uint32_t n,
		int *fds, char *who, size_t wholen)
{
	ino_t inos[64], foreign[MAX_FOREIGN];
	struct laddr mine;
	uint32_t opened = 0;
	int ret = 0;

	if (who)
		who[0] = '\0';
	if (n > sizeof(inos) / sizeof(inos[0]))
		return -EINVAL;
	for (; opened < n; opened++) {
		struct stat st;

		ret = net_listen(host, *port, backlog, n > 1);
		if (ret < 0)
			goto fail;
		fds[opened] = ret;
		if (!*port) {
			char addr[NET_ADDRSTRLEN];
			*port = (uint16_t)net_local_addr(ret, addr,
							 sizeof(addr));
		}
		inos[opened] = fstat(ret, &st) ? 0 : st.st_ino;
	}
	if (n > 1) {
		ret = sock_laddr(fds[0], &mine);
		if (!ret)
			ret = foreign_listeners(*port, &mine, inos, n, foreign,
						MAX_FOREIGN);
		if (ret > 0) {
			for (int i = 0; who && i < ret && !who[0]; i++)
				inode_owner(foreign[i], who, wholen);
			ret = -EADDRINUSE;
			goto fail;
		}
		if (ret < 0)
			log_warn("cannot check that no other process listens "
				 "on port %u: %s",
				 *port, strerror(-ret));
		ret = attach_steering(fds[0], n);
		if (ret)
			log_warn("cannot attach the reuseport steering "
				 "program: %s; another process joining port "
				 "%u could take connections",
				 strerror(-ret), *port);
	}
	return 0;
fail:
	if (ret == -EADDRINUSE && who && !who[0])
		listen_port_holder(*port, who, wholen);
	while (opened)
		close(fds[--opened]);
	return ret;
}

int listen_adopt(int fd, int backlog)
{
	int type = 0, proto = 0, domain = 0, acc = 0, fl;
	socklen_t sl = sizeof(int);
	char addr[NET_ADDRSTRLEN];

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl))
		return -errno;
	sl = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &sl))
		return -errno;
	sl = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &sl))
		return -errno;
	if (type != SOCK_STREAM || proto != IPPROTO_TCP ||
	    (domain != AF_INET && domain != AF_INET6))
		return -EPROTONOSUPPORT;
	/* listen() would bind an unbound socket to a random port. */
	if (net_local_addr(fd, addr, sizeof(addr)) == 0)
		return -EDESTADDRREQ;
	sl = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &sl))
		return -errno;
	if (!acc && listen(fd, backlog))
		return -errno;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	return 0;
}
