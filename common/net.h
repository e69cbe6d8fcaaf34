/* SPDX-License-Identifier: MIT */
/*
 * net.h - address parsing and socket set-up shared by the server, the client
 * and the benchmark: listen (dual-stack, REUSEADDR, optional REUSEPORT),
 * connect with a deadline (optionally from a chosen source address), and
 * printable peer names. Every function returns >= 0 or -errno.
 */
#ifndef RS_COMMON_NET_H
#define RS_COMMON_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct sockaddr_in6;

/* Longest string net_format_addr writes, NUL included ("[v6%scope]:65535"). */
#define NET_ADDRSTRLEN 72

/*
 * Split "host:port", "[v6]:port" or ":port" into @host (may become "") and
 * @port. Returns 0 or -EINVAL.
 */
int net_split_hostport(const char *s, char *host, size_t hostlen,
		       uint16_t *port);

/*
 * Bind and listen on @host (NULL or "" or "::": dual-stack wildcard, falling
 * back to 0.0.0.0 when IPv6 is unavailable) and @port (0: ephemeral). The
 * socket is non-blocking, close-on-exec, with SO_REUSEADDR and, if
 * @reuseport, SO_REUSEPORT. Returns the fd or -errno.
 */
int net_listen(const char *host, uint16_t port, int backlog, bool reuseport);

/*
 * Connect to @host:@port, trying each resolved address, within @timeout_ms
 * (< 0: no limit). @src, if not NULL, is a numeric source address to bind
 * first (for fanning connections out over 127.0.0.x). The returned fd is
 * blocking, close-on-exec, with TCP_NODELAY. Returns the fd or -errno.
 */
int net_connect(const char *host, uint16_t port, const char *src,
		int timeout_ms);

/* The 16-byte v4-mapped form (::ffff:a.b.c.d) of the IPv4 address @v4. */
void net_v4_mapped(uint8_t out[16], const void *v4);
/*
 * @sa as an IPv6 socket address: IPv6 copied, IPv4 v4-mapped (port kept);
 * any other family leaves @out zeroed.
 */
void net_to_v6(const struct sockaddr *sa, struct sockaddr_in6 *out);

/* "1.2.3.4:5", "[::1]:5", "[::ffff:1.2.3.4]:5" shown as "1.2.3.4:5". */
void net_format_addr(const struct sockaddr *sa, char *out, size_t len);
/* The local address of a socket, formatted; returns its port or -errno. */
int net_local_addr(int fd, char *out, size_t len);

int net_set_nodelay(int fd);
/*
 * TCP keepalive: first probe after @idle_s seconds of silence, then every
 * idle_s / 4 (at least 1 s), giving up after 4 unanswered probes. Set on a
 * listening socket, it is inherited by every accepted one. Returns 0 or
 * -errno.
 */
int net_set_keepalive(int fd, int idle_s);

/* An address block, kept as IPv6 (IPv4 blocks as v4-mapped, prefix + 96). */
struct net_cidr {
	uint8_t addr[16];
	uint8_t prefix; /* 0..128 */
};

struct sockaddr_in6;

/* "10.0.0.0/8", "::1", "fd00::/8" -> @out. Returns 0 or -EINVAL. */
int net_parse_cidr(const char *s, struct net_cidr *out);
/* Is @a (IPv6 or v4-mapped) inside @c? */
bool net_cidr_match(const struct net_cidr *c, const struct sockaddr_in6 *a);

#endif
