/* SPDX-License-Identifier: MIT */
/*
 * cli_control.c - the control-plane side of ringstore-cli.
 *
 *   ringstore-cli --control HOST:PORT|unix:PATH
 *                 status|keys|waiters|barriers|delete-prefix
 *
 * Each request is one HTTP/1.1 GET (POST for delete-prefix) with
 * "Connection: close" to the server's control plane (ringstore
 * --control-port / --control-socket); the response body is read to EOF.
 * `status` prints the health and a few headline figures (or the whole stats
 * JSON with --json); `keys`, `waiters` and `barriers` print the handler's
 * JSON document as it came. `delete-prefix` posts to /handler/delete until
 * the server reports nothing remaining (it deletes a bounded chunk per
 * request) and prints the totals (with --json, each response). The exit
 * status follows the CLI's: 2 when the control plane cannot be reached, 4
 * when delete-prefix deleted nothing, 5 for an HTTP error or a malformed
 * response.
 */
#include "cli_control.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum {
	EXIT_OK = 0,
	EXIT_USAGE = 1,
	EXIT_CONNECT = 2,
	EXIT_NOT_FOUND = 4,
	EXIT_SERVER = 5,
};

const char cli_control_help[] =
	"control plane (needs --control HOST:PORT|unix:PATH or "
	"$RINGSTORE_CONTROL):\n"
	"  status                 health and headline figures\n"
	"  keys [PREFIX [LIMIT]]  keys with value sizes (JSON; PREFIX gets the "
	"'/'\n                         prefix unless --raw)\n"
	"  waiters                who waits on which key, since when (JSON)\n"
	"  barriers               pending barriers: arrived / world size, "
	"peers (JSON)\n"
	"  delete-prefix PREFIX   delete every key under PREFIX (gets the "
	"'/'\n                         prefix unless --raw); prints how many\n";

bool cli_control_op(const char *op)
{
	return !strcmp(op, "status") || !strcmp(op, "keys") ||
	       !strcmp(op, "waiters") || !strcmp(op, "barriers") ||
	       !strcmp(op, "delete-prefix");
}

/* Returns a connected fd or -errno. */
static int ctl_connect(const char *control)
{
	int fd;

	if (!strncmp(control, "unix:", 5)) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (strlen(control + 5) >= sizeof(sa.sun_path))
			return -ENAMETOOLONG;
		strcpy(sa.sun_path, control + 5);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			int err = -errno;
			close(fd);
			return err;
		}
		return fd;
	}
	char host[256];
	const char *colon = strrchr(control, ':');
	const char *h = control;
	size_t hl;
	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - control);
	if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	if (getaddrinfo(host, colon + 1, &hints, &res))
		return -EHOSTUNREACH;
	fd = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		int s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			continue;
		if (!connect(s, ai->ai_addr, ai->ai_addrlen)) {
			fd = s;
			break;
		}
		fd = -errno;
		close(s);
	}
	freeaddrinfo(res);
	return fd;
}

/* Percent-encode @s into @out (RFC 3986 unreserved characters kept). */
static void urlencode(const char *s, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *s && n + 4 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("-._~/", c)) {
			out[n++] = (char)c;
		} else {
			out[n++] = '%';
			out[n++] = hex[c >> 4];
			out[n++] = hex[c & 15];
		}
	}
	out[n] = '\0';
}

/* Like every CLI key: PyTorch's '/' before @key unless @raw; then
 * percent-encoded into @enc. */
static void encode_key(const char *key, bool raw, char *enc, size_t len)
{
	char prefixed[1024];

	snprintf(prefixed, sizeof(prefixed), "%s%s", raw ? "" : "/", key);
	urlencode(prefixed, enc, len);
}

/*
 * @method (GET or POST, with no body) @path; on success *body is a malloc'd
 * NUL-terminated body and *status the HTTP status. Returns 0, or an exit
 * status.
 */
static int http_call(const char *control, const char *method, const char *path,
		     int *status, char **body)
{
	char req[1024];
	size_t cap = 65536, len = 0;
	char *buf;
	int fd = ctl_connect(control);

	if (fd < 0) {
		fprintf(stderr, "ringstore-cli: control plane %s: %s\n",
			control, strerror(-fd));
		return EXIT_CONNECT;
	}
	int n = snprintf(req, sizeof(req),
			 "%s %s HTTP/1.1\r\nHost: ringstore\r\n"
			 "Content-Length: 0\r\nConnection: close\r\n\r\n",
			 method, path);
	if (n < 0 || (size_t)n >= sizeof(req) ||
	    send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		fprintf(stderr, "ringstore-cli: sending to %s failed\n",
			control);
		return EXIT_SERVER;
	}
	buf = malloc(cap);
	for (;;) {
		if (!buf) {
			close(fd);
			return EXIT_SERVER;
		}
		if (len + 1 == cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				continue;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	char *sep = strstr(buf, "\r\n\r\n");
	if (sscanf(buf, "HTTP/1.%*d %d", status) != 1 || !sep) {
		fprintf(stderr,
			"ringstore-cli: malformed HTTP response from "
			"%s\n",
			control);
		free(buf);
		return EXIT_SERVER;
	}
	*body = strdup(sep + 4);
	free(buf);
	return *body ? EXIT_OK : EXIT_SERVER;
}

/* The integer after "\"name\":" in a flat JSON document, or -1. */
static long long json_int(const char *doc, const char *name)
{
	char pat[96];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(doc, pat);
	return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

static int run_status(const char *control, bool json)
{
	int status, ret;
	char *health, *stats;

	ret = http_call(control, "GET", "/health", &status, &health);
	if (ret)
		return ret;
	bool healthy = status == 200;
	free(health);
	ret = http_call(control, "GET", "/handler/stats", &status, &stats);
	if (ret)
		return ret;
	if (status != 200) {
		fprintf(stderr, "ringstore-cli: /handler/stats: HTTP %d\n",
			status);
		free(stats);
		return EXIT_SERVER;
	}
	if (json) {
		printf("%s%s", stats,
		       stats[0] && stats[strlen(stats) - 1] == '\n' ? ""
								    : "\n");
	} else {
		printf("health: %s\n", healthy ? "ok" : "shutting down");
		static const char *const fields[][2] = {
			{ "connections", "ringstore_connections_active" },
			{ "accepted", "ringstore_connections_accepted_total" },
			{ "keys", "ringstore_keys" },
			{ "stored_bytes", "ringstore_stored_bytes" },
			{ "waiters", "ringstore_waiters" },
			{ "queue_items", "ringstore_queue_items" },
			{ "reactors", "ringstore_reactors" },
			{ "rss_bytes", "ringstore_resident_memory_bytes" },
		};
		for (size_t i = 0; i < sizeof(fields) / sizeof(*fields); i++) {
			long long v = json_int(stats, fields[i][1]);
			if (v >= 0)
				printf("%s: %lld\n", fields[i][0], v);
		}
	}
	free(stats);
	return healthy ? EXIT_OK : EXIT_SERVER;
}

/*
 * POST /handler/delete until nothing remains: the server deletes a bounded
 * chunk per request. Prints the totals, or each response with @json.
 */
static int run_delete_prefix(const char *control, const char *enc, bool json)
{
	long long deleted = 0, absent = 0, left, n;
	char path[2048];
	int status, ret;
	char *body;

	snprintf(path, sizeof(path), "/handler/delete?prefix=%s", enc);
	do {
		ret = http_call(control, "POST", path, &status, &body);
		if (ret)
			return ret;
		n = json_int(body, "deleted");
		left = json_int(body, "remaining");
		if (status != 200 || n < 0 || left < 0) {
			fputs(body, stderr);
			fprintf(stderr, "ringstore-cli: %s: HTTP %d\n", path,
				status);
			free(body);
			return EXIT_SERVER;
		}
		deleted += n;
		absent += json_int(body, "absent");
		if (json)
			fputs(body, stdout);
		free(body);
	} while (left > 0);
	if (!json)
		printf("deleted: %lld\nabsent: %lld\n", deleted, absent);
	return deleted ? EXIT_OK : EXIT_NOT_FOUND;
}

int cli_control_run(const char *control, const char *op, int argc, char **argv,
		    bool json, bool raw)
{
	char path[2048], enc[1536];
	int status, ret;
	char *body;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(cli_control_help, stdout);
			return EXIT_OK;
		}
	}
	if (!strcmp(op, "status")) {
		if (argc) {
			fprintf(stderr, "usage: ringstore-cli status\n");
			return EXIT_USAGE;
		}
		return run_status(control, json);
	}
	if (!strcmp(op, "delete-prefix")) {
		/* A prefix is required: "" would be every key. */
		if (argc != 1 || !argv[0][0]) {
			fprintf(stderr, "usage: ringstore-cli delete-prefix "
					"PREFIX\n");
			return EXIT_USAGE;
		}
		encode_key(argv[0], raw, enc, sizeof(enc));
		return run_delete_prefix(control, enc, json);
	}
	if (!strcmp(op, "keys")) {
		if (argc > 2) {
			fprintf(stderr, "usage: ringstore-cli keys [PREFIX "
					"[LIMIT]]\n");
			return EXIT_USAGE;
		}
		encode_key(argc > 0 ? argv[0] : "", raw, enc, sizeof(enc));
		snprintf(path, sizeof(path), "/handler/keys?prefix=%s%s%s", enc,
			 argc > 1 ? "&limit=" : "", argc > 1 ? argv[1] : "");
	} else {
		if (argc) {
			fprintf(stderr, "usage: ringstore-cli %s\n", op);
			return EXIT_USAGE;
		}
		snprintf(path, sizeof(path), "/handler/%s", op);
	}
	ret = http_call(control, "GET", path, &status, &body);
	if (ret)
		return ret;
	fputs(body, status == 200 ? stdout : stderr);
	if (body[0] && body[strlen(body) - 1] != '\n')
		fputc('\n', status == 200 ? stdout : stderr);
	free(body);
	if (status != 200) {
		fprintf(stderr, "ringstore-cli: %s: HTTP %d\n", path, status);
		return EXIT_SERVER;
	}
	return EXIT_OK;
}
