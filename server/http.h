/* SPDX-License-Identifier: MIT */
/*
 * http.h - just enough HTTP/1.1 for the control plane: an incremental request
 * parser and a response writer.
 *
 * Sans-I/O: the reactor hands received bytes to http_feed in whatever pieces
 * they arrived, and sends what http_response appended to a buf. The parser
 * copies the current request (head, then body) into its own buffers, so the
 * caller may reuse its receive buffer at once; it never reads past the end of
 * the current request, which keeps pipelined requests apart.
 *
 * Accepted: a request line "METHOD /target HTTP/1.x", header lines ending in
 * CRLF (or a bare LF), and a body of Content-Length bytes. Refused: heads over
 * HTTP_MAX_HEAD (431), bodies over HTTP_MAX_BODY (413), Transfer-Encoding
 * (411: send Content-Length), other HTTP versions (505), anything else
 * malformed (400). After a refusal the connection must be closed.
 *
 * One parser per connection, used by one thread.
 */
#ifndef RS_SERVER_HTTP_H
#define RS_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define HTTP_MAX_HEAD (8u << 10) /* request line and headers */
#define HTTP_MAX_BODY (64u << 10)
#define HTTP_MAX_PARAMS 32 /* query parameters */

/* One decoded query parameter; both strings are NUL-terminated. */
struct http_param {
	const char *name;  /* borrowed from the parser */
	const char *value; /* borrowed; may hold NUL bytes, see value_len */
	size_t value_len;
};

/*
 * Parser state. After http_feed returns 1, the fields below "the request"
 * describe it; they stay valid until the next http_feed or http_parser_free.
 */
struct http_parser {
	struct buf head;   /* owned: request line and headers, decoded */
	struct buf body;   /* owned: the body */
	bool head_done;    /* the head has been parsed */
	bool complete;     /* a request is ready; next feed starts anew */
	int status;        /* after a failed feed: the status to answer */
	const char *error; /* ... and why (a static string) */
	/* the request */
	const char *method; /* "GET", "POST", ... */
	const char *path;   /* percent-decoded, without the query */
	struct http_param params[HTTP_MAX_PARAMS];
	size_t nparams;
	size_t content_length;
	uint8_t minor;        /* HTTP/1.minor */
	bool keep_alive;      /* the connection may serve another request */
	bool expect_continue; /* "Expect: 100-continue" and a body to come;
			       * the caller clears it once it has answered
			       * "100 Continue" */
};

void http_parser_init(struct http_parser *hp);
void http_parser_free(struct http_parser *hp);

/*
 * Take bytes of the request stream, stopping at the end of the current
 * request. Returns 1 when a request is complete (*used bytes of @p belong to
 * it; feed the rest again for the next one), 0 when all @n bytes were taken
 * and more are needed (hp->head_done tells whether the head is complete),
 * -EBADMSG (400, 411, 505) or -EMSGSIZE (413, 431) for a request that must
 * be answered with hp->status and then the connection closed, or -ENOMEM.
 */
int http_feed(struct http_parser *hp, const uint8_t *p, size_t n, size_t *used);

/*
 * The value of query parameter @name (its first occurrence) among the @n
 * @params of a request (a parser's, or a copy of them), or NULL. *@len, if
 * @len, gets the value's length.
 */
const char *http_param(const struct http_param *params, size_t n,
		       const char *name, size_t *len);

/* "OK", "Not Found", ...; "Unknown" for a status not in the table. */
const char *http_status_text(int status);

#define HTTP_R_CLOSE 1u /* "Connection: close" (else keep-alive) */
#define HTTP_R_HEAD 2u  /* a HEAD reply: headers only */

/*
 * Append a response: status line, Content-Type (if @ctype), Content-Length,
 * Connection, @extra (complete "Name: value\r\n" lines, or NULL), a blank
 * line and, unless HTTP_R_HEAD, the @len body bytes. Returns 0 or -ENOMEM
 * (@out may then hold part of the response).
 */
int http_response(struct buf *out, int status, const char *ctype,
		  const void *body, size_t len, const char *extra,
		  unsigned flags);

#endif
