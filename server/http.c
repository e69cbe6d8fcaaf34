/* SPDX-License-Identifier: MIT */
/*
 * http.c - see http.h. The head is gathered until its blank line, then
 * parsed once, in place: separators become NULs and percent-escapes are
 * decoded where they stand (decoding only shrinks a string), so the method,
 * path and parameters point into the head buffer and nothing else is
 * allocated. The head buffer never grows after parsing (the body has its
 * own), so those pointers stay valid while the body arrives.
 */
#include "http.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "compiler.h"

/* An idle parser keeps at most this much storage per buffer. */
#define HTTP_KEEP_STORAGE 16384

void http_parser_init(struct http_parser *hp)
{
	memset(hp, 0, sizeof(*hp));
}

void http_parser_free(struct http_parser *hp)
{
	buf_free(&hp->head);
	buf_free(&hp->body);
	http_parser_init(hp);
}

/* Forget the finished request, keeping (modest) storage for the next one. */
static void next_request(struct http_parser *hp)
{
	struct buf head = hp->head, body = hp->body;

	buf_reset(&head);
	buf_reset(&body);
	buf_shrink(&head, HTTP_KEEP_STORAGE);
	buf_shrink(&body, HTTP_KEEP_STORAGE);
	http_parser_init(hp);
	hp->head = head;
	hp->body = body;
}

static int fail(struct http_parser *hp, int status, const char *why, int err)
{
	hp->status = status;
	hp->error = why;
	return err;
}

/* RFC 9110 tchar: the characters of methods and header names. */
static bool is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int hex_val(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode the NUL-terminated string @s in place (%XX escapes, and '+' as a
 * space when @plus), terminating the result. Returns its length, or -EINVAL
 * for a malformed escape.
 */
static ssize_t pct_decode(char *s, bool plus)
{
	char *w = s;

	for (const char *r = s; *r; r++) {
		if (*r == '%') {
			int hi = hex_val((unsigned char)r[1]);
			int lo = hi < 0 ? -1 : hex_val((unsigned char)r[2]);

			if (lo < 0)
				return -EINVAL;
			*w++ = (char)(hi << 4 | lo);
			r += 2;
		} else {
			*w++ = plus && *r == '+' ? ' ' : *r;
		}
	}
	*w = '\0';
	return w - s;
}

/* Split "a=1&b&c=x%20y" (NUL-terminated) into hp->params. */
static int parse_query(struct http_parser *hp, char *q)
{
	while (*q) {
		char *amp = strchr(q, '&');
		char *next = amp ? amp + 1 : q + strlen(q);

		if (amp)
			*amp = '\0';
		if (*q) {
			char *eq = strchr(q, '=');
			char *val = eq ? eq + 1 : q + strlen(q);
			ssize_t vlen;

			if (hp->nparams == HTTP_MAX_PARAMS)
				return fail(hp, 400,
					    "too many query parameters",
					    -EBADMSG);
			if (eq)
				*eq = '\0';
			vlen = pct_decode(val, true);
			if (pct_decode(q, true) < 0 || vlen < 0)
				return fail(hp, 400,
					    "bad percent-escape in query",
					    -EBADMSG);
			hp->params[hp->nparams++] = (struct http_param){
				.name = q,
				.value = val,
				.value_len = (size_t)vlen,
			};
		}
		q = next;
	}
	return 0;
}

/* "METHOD /path?query HTTP/1.x", NUL-terminated, without its line end. */
static int parse_request_line(struct http_parser *hp, char *line)
{
	char *sp1 = strchr(line, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	char *target, *query, *ver;
	ssize_t plen;

	if (!sp1 || !sp2 || sp1 == line)
		return fail(hp, 400, "malformed request line", -EBADMSG);
	*sp1 = *sp2 = '\0';
	for (const char *m = line; *m; m++)
		if (!is_tchar((unsigned char)*m))
			return fail(hp, 400, "malformed method", -EBADMSG);
	hp->method = line;

	ver = sp2 + 1;
	if (strncmp(ver, "HTTP/", 5) || !(ver[5] >= '0' && ver[5] <= '9') ||
	    ver[6] != '.' || !(ver[7] >= '0' && ver[7] <= '9') || ver[8])
		return fail(hp, 400, "malformed HTTP version", -EBADMSG);
	if (ver[5] != '1')
		return fail(hp, 505, "only HTTP/1.x is supported", -EBADMSG);
	hp->minor = (uint8_t)(ver[7] - '0');

	target = sp1 + 1;
	if (*target != '/')
		return fail(hp, 400, "the target must be a path", -EBADMSG);
	query = strchr(target, '?');
	if (query)
		*query++ = '\0';
	plen = pct_decode(target, false);
	if (plen < 0 || strlen(target) != (size_t)plen)
		return fail(hp, 400, "bad percent-escape in path", -EBADMSG);
	hp->path = target;
	return query ? parse_query(hp, query) : 0;
}

/* Does the comma-separated token list @v contain @tok (any case)? */
static bool has_token(const char *v, const char *tok)
{
	size_t n = strlen(tok);

	while (*v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		size_t len = strcspn(v, ", \t");
		if (len == n && !strncasecmp(v, tok, n))
			return true;
		v += len;
	}
	return false;
}

struct head_flags {
	bool have_length, chunked, close, keep_alive;
};

/* One "Name: value" line, NUL-terminated. */
static int parse_header(struct http_parser *hp, char *line,
			struct head_flags *f)
{
	char *colon = strchr(line, ':');
	char *v, *e;

	if (!colon || colon == line)
		return fail(hp, 400, "malformed header line", -EBADMSG);
	for (char *c = line; c < colon; c++)
		if (!is_tchar((unsigned char)*c))
			return fail(hp, 400, "malformed header name", -EBADMSG);
	*colon = '\0';
	v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	e = v + strlen(v);
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';

	if (!strcasecmp(line, "content-length")) {
		uint64_t len = 0;

		if (!*v || strspn(v, "0123456789") != (size_t)(e - v))
			return fail(hp, 400, "bad Content-Length", -EBADMSG);
		/* Saturate: anything past 2^40 is "too large" anyway. */
		for (const char *d = v; *d && len < (1ull << 40); d++)
			len = len * 10 + (uint64_t)(*d - '0');
		if (f->have_length && len != hp->content_length)
			return fail(hp, 400, "conflicting Content-Length",
				    -EBADMSG);
		f->have_length = true;
		hp->content_length = len;
	} else if (!strcasecmp(line, "transfer-encoding")) {
		f->chunked = true;
	} else if (!strcasecmp(line, "connection")) {
		f->close |= has_token(v, "close");
		f->keep_alive |= has_token(v, "keep-alive");
	} else if (!strcasecmp(line, "expect")) {
		hp->expect_continue = !strcasecmp(v, "100-continue");
	}
	return 0;
}

/* Cut the next line off *cur (ending in LF or CRLF) and terminate it. */
static char *take_line(char **cur, char *end)
{
	char *line = *cur;
	char *nl = memchr(line, '\n', (size_t)(end - line));

	*nl = '\0';
	if (nl > line && nl[-1] == '\r')
		nl[-1] = '\0';
	*cur = nl + 1;
	return line;
}

/* Parse the complete head (it ends with its blank line). */
static int parse_head(struct http_parser *hp)
{
	char *cur = (char *)hp->head.data;
	char *end = cur + hp->head.len;
	struct head_flags f = { 0 };
	int ret;

	if (memchr(cur, '\0', hp->head.len))
		return fail(hp, 400, "NUL byte in the request head", -EBADMSG);
	ret = parse_request_line(hp, take_line(&cur, end));
	while (!ret && cur < end) {
		char *line;

		if (*cur == ' ' || *cur == '\t')
			return fail(hp, 400, "folded header lines", -EBADMSG);
		line = take_line(&cur, end);
		if (*line)
			ret = parse_header(hp, line, &f);
	}
	if (ret)
		return ret;
	if (f.chunked)
		return fail(hp, 411,
			    "Transfer-Encoding is not supported; "
			    "send Content-Length",
			    -EBADMSG);
	if (hp->content_length > HTTP_MAX_BODY)
		return fail(hp, 413, "request body too large", -EMSGSIZE);
	hp->keep_alive = !f.close && (hp->minor >= 1 || f.keep_alive);
	hp->expect_continue &= hp->content_length > 0;
	return 0;
}

/*
 * The end of the head (one past its blank line) in @p[0..len), searching
 * only where bytes after @from can complete it; 0 if not there yet.
 */
static size_t head_end(const uint8_t *p, size_t len, size_t from)
{
	for (size_t i = from >= 2 ? from - 2 : 0; i < len; i++) {
		if (p[i] != '\n')
			continue;
		if (i + 1 < len && p[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

int http_feed(struct http_parser *hp, const uint8_t *p, size_t n, size_t *used)
{
	size_t took = 0, take, end;
	int ret;

	if (hp->complete)
		next_request(hp);
	if (!hp->head_done) {
		size_t old = hp->head.len;

		/* Blank lines before a request line are ignored (RFC 9112). */
		while (!old && took < n && (p[took] == '\r' || p[took] == '\n'))
			took++;
		take = n - took;
		if (take > HTTP_MAX_HEAD - old)
			take = HTTP_MAX_HEAD - old;
		if (buf_append(&hp->head, p + took, take))
			return -ENOMEM;
		end = head_end(hp->head.data, hp->head.len, old);
		if (!end) {
			*used = took + take;
			if (hp->head.len >= HTTP_MAX_HEAD)
				return fail(hp, 431, "request head too large",
					    -EMSGSIZE);
			return 0;
		}
		/* Bytes after the blank line go back to the caller. */
		took += take - (hp->head.len - end);
		hp->head.len = end;
		ret = parse_head(hp);
		if (ret)
			return ret;
		hp->head_done = true;
	}
	take = hp->content_length - buf_used(&hp->body);
	if (take > n - took)
		take = n - took;
	if (buf_append(&hp->body, p + took, take))
		return -ENOMEM;
	*used = took + take;
	if (buf_used(&hp->body) < hp->content_length)
		return 0;
	hp->complete = true;
	hp->expect_continue = false;
	return 1;
}

const char *http_param(const struct http_param *params, size_t n,
		       const char *name, size_t *len)
{
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(params[i].name, name)) {
			if (len)
				*len = params[i].value_len;
			return params[i].value;
		}
	}
	return NULL;
}

const char *http_status_text(int status)
{
	static const struct {
		int status;
		const char *text;
	} texts[] = {
		{ 100, "Continue" },
		{ 200, "OK" },
		{ 202, "Accepted" },
		{ 400, "Bad Request" },
		{ 404, "Not Found" },
		{ 405, "Method Not Allowed" },
		{ 409, "Conflict" },
		{ 411, "Length Required" },
		{ 413, "Content Too Large" },
		{ 431, "Request Header Fields Too Large" },
		{ 500, "Internal Server Error" },
		{ 503, "Service Unavailable" },
		{ 505, "HTTP Version Not Supported" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(texts); i++)
		if (texts[i].status == status)
			return texts[i].text;
	return "Unknown";
}

int http_response(struct buf *out, int status, const char *ctype,
		  const void *body, size_t len, const char *extra,
		  unsigned flags)
{
	char head[512];
	int n;
	int ret;

	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\n"
		     "Connection: %s\r\n",
		     status, http_status_text(status),
		     ctype ? "Content-Type: " : "", ctype ? ctype : "",
		     ctype ? "\r\n" : "", len,
		     flags & HTTP_R_CLOSE ? "close" : "keep-alive");
	if (n < 0 || (size_t)n >= sizeof(head))
		return -EINVAL;
	ret = buf_append(out, head, (size_t)n);
	if (!ret && extra)
		ret = buf_append(out, extra, strlen(extra));
	if (!ret)
		ret = buf_append(out, "\r\n", 2);
	if (!ret && !(flags & HTTP_R_HEAD))
		ret = buf_append(out, body, len);
	return ret;
}
