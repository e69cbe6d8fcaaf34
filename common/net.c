/* SPDX-License-Identifier: MIT */
/*
 * net.c - see net.h. Blocking helpers used at start-up and by clients; the
 * server's data path never calls them.
 */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "now.h"

int net_split_hostport(const char *s, char *host, size_t hostlen,
		       uint16_t *port)
{
	const char *colon, *h = s, *hend;
	char *end;

	if (s[0] == '[') {
		hend = strchr(s, ']');
		if (!hend || hend[1] != ':')
			return -EINVAL;
		h = s + 1;
		colon = hend + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hend = colon;
	}
	if ((size_t)(hend - h) >= hostlen)
		return -EINVAL;
	errno = 0;
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || p > 65535)
		return -EINVAL;
	memcpy(host, h, (size_t)(hend - h));
	host[hend - h] = '\0';
	*port = (uint16_t)p;
	return 0;
}

static int listen_on(const struct sockaddr *sa, socklen_t len, int backlog,
		     bool reuseport, bool v6only_off)
{
	int one = 1, zero = 0, fd;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    (reuseport &&
	     setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one))) ||
	    (v6only_off &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero))) ||
	    bind(fd, sa, len) || listen(fd, backlog)) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int net_listen(const char *host, uint16_t port, int backlog, bool reuseport)
{
	struct addrinfo hints = { 0 }, *res, *ai;
	char portstr[8];
	int fd, err;

	if (!host || !*host || !strcmp(host, "::")) {
		struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
					   .sin6_port = htons(port),
					   .sin6_addr = IN6ADDR_ANY_INIT };
		fd = listen_on((struct sockaddr *)&a6, sizeof(a6), backlog,
			       reuseport, true);
		if (fd >= 0 || (fd != -EAFNOSUPPORT && fd != -EADDRNOTAVAIL))
			return fd;
		struct sockaddr_in a4 = { .sin_family = AF_INET,
					  .sin_port = htons(port),
					  .sin_addr.s_addr =
						  htonl(INADDR_ANY) };
		return listen_on((struct sockaddr *)&a4, sizeof(a4), backlog,
				 reuseport, false);
	}
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", port);
	err = getaddrinfo(host, portstr, &hints, &res);
	if (err)
		return err == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
	fd = -EADDRNOTAVAIL;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = listen_on(ai->ai_addr, ai->ai_addrlen, backlog, reuseport,
			       false);
		if (fd >= 0)
			break;
	}
	freeaddrinfo(res);
	return fd;
}

static int connect_one(const struct addrinfo *ai, const char *src,
		       int64_t deadline)
{
	int fd, one = 1, err;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	if (src) {
		struct addrinfo hints = { .ai_family = ai->ai_family,
					  .ai_flags = AI_NUMERICHOST },
				*sres;
		if (getaddrinfo(src, NULL, &hints, &sres)) {
			close(fd);
			return -EADDRNOTAVAIL;
		}
		err = bind(fd, sres->ai_addr, sres->ai_addrlen) ? -errno : 0;
		freeaddrinfo(sres);
		if (err) {
			close(fd);
			return err;
		}
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS) {
		err = -errno;
		close(fd);
		return err;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int wait = deadline < 0
				   ? -1
				   : (int)(deadline - (int64_t)now_mono_ms());

		if (deadline >= 0 && wait <= 0) {
			close(fd);
			return -ETIMEDOUT;
		}
		int r = poll(&pfd, 1, wait);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = -errno;
			close(fd);
			return err;
		}
		if (r > 0)
			break;
	}
	socklen_t sl = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) || err) {
		err = err ? -err : -errno;
		close(fd);
		return err;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int net_connect(const char *host, uint16_t port, const char *src,
		int timeout_ms)
{
	struct addrinfo hints = { 0 }, *res, *ai;
	char portstr[8];
	int64_t deadline = timeout_ms < 0 ? -1
					  : (int64_t)now_mono_ms() + timeout_ms;
	int fd = -EHOSTUNREACH, err;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", port);
	err = getaddrinfo(host, portstr, &hints, &res);
	if (err)
		return err == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = connect_one(ai, src, deadline);
		if (fd >= 0 || fd == -ETIMEDOUT)
			break;
	}
	freeaddrinfo(res);
	return fd;
}

void net_v4_mapped(uint8_t out[16], const void *v4)
{
	memset(out, 0, 10);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, v4, 4);
}

void net_to_v6(const struct sockaddr *sa, struct sockaddr_in6 *out)
{
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET6) {
		memcpy(out, sa, sizeof(*out));
	} else if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a4 = (const void *)sa;

		out->sin6_family = AF_INET6;
		out->sin6_port = a4->sin_port;
		net_v4_mapped(out->sin6_addr.s6_addr, &a4->sin_addr);
	}
}

void net_format_addr(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)sa;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, ntohs(a->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], ip,
				  sizeof(ip));
			snprintf(out, len, "%s:%u", ip, ntohs(a->sin6_port));
		} else {
			inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			snprintf(out, len, "[%s]:%u", ip, ntohs(a->sin6_port));
		}
	} else if (sa->sa_family == AF_UNIX) {
		snprintf(out, len, "unix");
	} else {
		snprintf(out, len, "?");
	}
}

int net_local_addr(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -errno;
	net_format_addr((struct sockaddr *)&ss, out, len);
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

int net_set_keepalive(int fd, int idle_s)
{
	int one = 1, intvl = idle_s / 4 > 0 ? idle_s / 4 : 1, cnt = 4;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s,
		       sizeof(idle_s)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)))
		return -errno;
	return 0;
}

int net_set_nodelay(int fd)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		return -errno;
	return 0;
}

int net_parse_cidr(const char *s, struct net_cidr *out)
{
	char host[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
	struct in_addr a4;
	unsigned long prefix;
	char *end;
	bool v4;

	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, host, &a4) == 1) {
		v4 = true;
		net_v4_mapped(out->addr, &a4);
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		v4 = false;
	} else {
		return -EINVAL;
	}
	prefix = v4 ? 32 : 128;
	if (slash) {
		errno = 0;
		prefix = strtoul(slash + 1, &end, 10);
		if (errno || end == slash + 1 || *end ||
		    prefix > (v4 ? 32u : 128u))
			return -EINVAL;
	}
	out->prefix = (uint8_t)(v4 ? prefix + 96 : prefix);
	return 0;
}

bool net_cidr_match(const struct net_cidr *c, const struct sockaddr_in6 *a)
{
	const uint8_t *x = a->sin6_addr.s6_addr;
	unsigned full = c->prefix / 8, rest = c->prefix % 8;

	if (memcmp(x, c->addr, full))
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));
		if ((x[full] & mask) != (c->addr[full] & mask))
			return false;
	}
	return true;
}
