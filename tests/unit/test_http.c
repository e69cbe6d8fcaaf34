/* SPDX-License-Identifier: MIT */
/*
 * test_http.c - the control plane's HTTP/1.1 request parser and response
 * writer (server/http.c): every split of a request, pipelining, keep-alive
 * rules, percent-decoding, the size limits and malformed requests.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"

/*
 * Feed @len bytes of @s in pieces of at most @chunk bytes until a request
 * completes or fails. Returns http_feed's last result; *consumed is how many
 * bytes of @s the request took.
 */
static int feed(struct http_parser *hp, const char *s, size_t len, size_t chunk,
		size_t *consumed)
{
	size_t off = 0;
	int ret = 0;

	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;
		size_t used = 0;

		ret = http_feed(hp, (const uint8_t *)s + off, n, &used);
		assert_true(used <= n);
		off += used;
		if (ret != 0)
			break;
		assert_int_equal(used, n);
	}
	if (consumed)
		*consumed = off;
	return ret;
}

static int feed_str(struct http_parser *hp, const char *s)
{
	return feed(hp, s, strlen(s), SIZE_MAX, NULL);
}

static void test_simple_get(void **state)
{
	struct http_parser hp;

	(void)state;
	http_parser_init(&hp);
	assert_int_equal(
		feed_str(&hp, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"), 1);
	assert_string_equal(hp.method, "GET");
	assert_string_equal(hp.path, "/health");
	assert_int_equal(hp.nparams, 0);
	assert_int_equal(hp.minor, 1);
	assert_true(hp.keep_alive);
	assert_int_equal(buf_used(&hp.body), 0);
	http_parser_free(&hp);
}

static const char post_req[] =
	"POST /handler/keys%2Fx?prefix=%2Fa+b&limit=10&flag HTTP/1.1\r\n"
	"Host: localhost\r\n"
	"Content-Type: text/plain\r\n"
	"Content-Length: 11\r\n"
	"\r\n"
	"hello world";

/* Query parameter @name of the request @hp parsed. */
static const char *param(const struct http_parser *hp, const char *name,
			 size_t *len)
{
	return http_param(hp->params, hp->nparams, name, len);
}

static void check_post(struct http_parser *hp)
{
	size_t len = 99;

	assert_string_equal(hp->method, "POST");
	assert_string_equal(hp->path, "/handler/keys/x");
	assert_int_equal(hp->nparams, 3);
	assert_string_equal(param(hp, "prefix", &len), "/a b");
	assert_int_equal(len, 4);
	assert_string_equal(param(hp, "limit", NULL), "10");
	assert_string_equal(param(hp, "flag", &len), "");
	assert_int_equal(len, 0);
	assert_null(param(hp, "nope", NULL));
	assert_int_equal(hp->content_length, 11);
	assert_int_equal(buf_used(&hp->body), 11);
	assert_memory_equal(buf_head(&hp->body), "hello world", 11);
}

/* The request split in two at every offset, and fed byte by byte. */
static void test_every_split(void **state)
{
	size_t len = strlen(post_req);

	(void)state;
	for (size_t cut = 0; cut <= len; cut++) {
		struct http_parser hp;
		size_t used = 0, used2 = 0;
		int ret;

		http_parser_init(&hp);
		ret = http_feed(&hp, (const uint8_t *)post_req, cut, &used);
		if (cut < len) {
			assert_int_equal(ret, 0);
			assert_int_equal(used, cut);
			ret = http_feed(&hp, (const uint8_t *)post_req + cut,
					len - cut, &used2);
		}
		assert_int_equal(ret, 1);
		assert_int_equal(used + used2, len);
		check_post(&hp);
		http_parser_free(&hp);
	}
	for (size_t chunk = 1; chunk < 8; chunk++) {
		struct http_parser hp;
		size_t used;

		http_parser_init(&hp);
		assert_int_equal(feed(&hp, post_req, len, chunk, &used), 1);
		assert_int_equal(used, len);
		check_post(&hp);
		http_parser_free(&hp);
	}
}

/* Three requests in one buffer come out one at a time, in order. */
static void test_pipelining(void **state)
{
	char all[1024];
	const char *paths[] = { "/handler/keys/x", "/b", "/c" };
	struct http_parser hp;
	size_t off = 0, len;

	(void)state;
	len = (size_t)snprintf(all, sizeof(all),
			       "%sGET /b HTTP/1.1\r\n\r\n"
			       "GET /c?x=1 HTTP/1.1\r\n\r\n",
			       post_req);
	http_parser_init(&hp);
	for (int i = 0; i < 3; i++) {
		size_t used = 0;

		assert_int_equal(http_feed(&hp, (const uint8_t *)all + off,
					   len - off, &used),
				 1);
		off += used;
		assert_string_equal(hp.path, paths[i]);
		if (i == 0)
			check_post(&hp);
		else
			assert_int_equal(buf_used(&hp.body), 0);
	}
	assert_int_equal(off, len);
	assert_string_equal(param(&hp, "x", NULL), "1");

	/* The same stream split at every offset still yields three. */
	for (size_t cut = 1; cut < len; cut++) {
		int got = 0;

		http_parser_free(&hp);
		http_parser_init(&hp);
		for (size_t part = 0; part < 2; part++) {
			const char *p = all + (part ? cut : 0);
			size_t n = part ? len - cut : cut;

			while (n) {
				size_t used = 0;
				int ret = http_feed(&hp, (const uint8_t *)p, n,
						    &used);

				assert_true(ret == 0 || ret == 1);
				p += used;
				n -= used;
				if (ret == 1)
					assert_string_equal(hp.path,
							    paths[got++]);
			}
		}
		assert_int_equal(got, 3);
	}
	http_parser_free(&hp);
}

static bool keep_alive_of(const char *req)
{
	struct http_parser hp;
	bool ka;

	http_parser_init(&hp);
	assert_int_equal(feed_str(&hp, req), 1);
	ka = hp.keep_alive;
	http_parser_free(&hp);
	return ka;
}

static void test_keep_alive(void **state)
{
	(void)state;
	assert_true(keep_alive_of("GET / HTTP/1.1\r\n\r\n"));
	assert_false(
		keep_alive_of("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
	assert_false(keep_alive_of(
		"GET / HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n"));
	assert_true(
		keep_alive_of("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n"));
	assert_false(keep_alive_of("GET / HTTP/1.0\r\n\r\n"));
	assert_true(keep_alive_of(
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
	assert_false(keep_alive_of(
		"GET / HTTP/1.0\r\nConnection: keep-alive,close\r\n\r\n"));
}

static void test_lenient_framing(void **state)
{
	struct http_parser hp;
	size_t used;

	(void)state;
	/* Bare LF line ends, and blank lines before the request line. */
	http_parser_init(&hp);
	assert_int_equal(feed_str(&hp, "\r\n\r\nGET /a HTTP/1.1\nX-A:  b \n\n"),
			 1);
	assert_string_equal(hp.path, "/a");
	/* A later request after a body's stray CRLF. */
	assert_int_equal(feed(&hp, "\r\nGET /b HTTP/1.1\r\n\r\n", 21, 1, &used),
			 1);
	assert_int_equal(used, 21);
	assert_string_equal(hp.path, "/b");
	http_parser_free(&hp);
}

static void test_percent(void **state)
{
	struct http_parser hp;
	size_t len;
	const char *v;

	(void)state;
	http_parser_init(&hp);
	assert_int_equal(
		feed_str(
			&hp,
			"GET /x%41%2f%7E+?k%3D=a%00b%26&=e&&z=%e2%82%AC HTTP/1.1\r\n\r\n"),
		1);
	assert_string_equal(hp.path, "/xA/~+");
	v = param(&hp, "k=", &len);
	assert_non_null(v);
	assert_int_equal(len, 4);
	assert_memory_equal(v, "a\0b&", 4);
	assert_string_equal(param(&hp, "", NULL), "e");
	assert_string_equal(param(&hp, "z", NULL), "\xe2\x82\xac");
	assert_int_equal(hp.nparams, 3);
	http_parser_free(&hp);
}

struct bad {
	const char *req;
	int status;
	int err;
};

static void test_bad_requests(void **state)
{
	static const struct bad bad[] = {
		{ "GARBAGE\r\n\r\n", 400, -EBADMSG },
		{ "GET /\r\n\r\n", 400, -EBADMSG },
		{ " GET / HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET  / HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "G(T / HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET / HTTP/2.0\r\n\r\n", 505, -EBADMSG },
		{ "GET / HTTP/1.10\r\n\r\n", 400, -EBADMSG },
		{ "GET / FTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET http://x/ HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET /a%00b HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET /a%zz HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET /a% HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET /?a=%4 HTTP/1.1\r\n\r\n", 400, -EBADMSG },
		{ "GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400, -EBADMSG },
		{ "GET / HTTP/1.1\r\n: empty\r\n\r\n", 400, -EBADMSG },
		{ "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, -EBADMSG },
		{ "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400, -EBADMSG },
		{ "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400,
		  -EBADMSG },
		{ "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400,
		  -EBADMSG },
		{ "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		  400, -EBADMSG },
		{ "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411,
		  -EBADMSG },
		{ "POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", 413,
		  -EMSGSIZE },
		{ "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
		  413, -EMSGSIZE },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct http_parser hp;

		http_parser_init(&hp);
		assert_int_equal(feed_str(&hp, bad[i].req), bad[i].err);
		if (hp.status != bad[i].status)
			fail_msg("%s: status %d, want %d", bad[i].req,
				 hp.status, bad[i].status);
		assert_non_null(hp.error);
		http_parser_free(&hp);
	}

	/* A NUL byte in the head. */
	struct http_parser hp;

	http_parser_init(&hp);
	assert_int_equal(feed(&hp, "GET / HTTP/1.1\r\nA: \0\r\n\r\n", 24,
			      SIZE_MAX, NULL),
			 -EBADMSG);
	assert_int_equal(hp.status, 400);
	http_parser_free(&hp);

	/* Too many query parameters. */
	char q[512] = "GET /?";
	for (int i = 0; i <= HTTP_MAX_PARAMS; i++)
		strcat(q, "a=1&");
	strcat(q, " HTTP/1.1\r\n\r\n");
	http_parser_init(&hp);
	assert_int_equal(feed_str(&hp, q), -EBADMSG);
	assert_int_equal(hp.status, 400);
	http_parser_free(&hp);
}

static void test_limits(void **state)
{
	struct http_parser hp;
	char *big = malloc(HTTP_MAX_HEAD + HTTP_MAX_BODY + 256);
	size_t n, used;

	(void)state;
	assert_non_null(big);
	/* A head of exactly HTTP_MAX_HEAD bytes is fine... */
	n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nX: ");
	memset(big + n, 'a', HTTP_MAX_HEAD - n - 4);
	memcpy(big + HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
	http_parser_init(&hp);
	assert_int_equal(feed(&hp, big, HTTP_MAX_HEAD, 1000, &used), 1);
	assert_int_equal(used, HTTP_MAX_HEAD);
	http_parser_free(&hp);
	/* ...one more byte is not, and neither is an endless header. */
	memset(big + n, 'a', HTTP_MAX_HEAD - n);
	memcpy(big + HTTP_MAX_HEAD - 3, "\r\n\r\n", 4);
	http_parser_init(&hp);
	assert_int_equal(feed(&hp, big, HTTP_MAX_HEAD + 1, 1000, NULL),
			 -EMSGSIZE);
	assert_int_equal(hp.status, 431);
	http_parser_free(&hp);
	memset(big, 'a', HTTP_MAX_HEAD * 2);
	http_parser_init(&hp);
	assert_int_equal(feed(&hp, big, HTTP_MAX_HEAD * 2, 3000, NULL),
			 -EMSGSIZE);
	assert_int_equal(hp.status, 431);
	http_parser_free(&hp);

	/* A body of exactly HTTP_MAX_BODY bytes. */
	n = (size_t)sprintf(big,
			    "POST /x HTTP/1.1\r\nContent-Length: %u\r\n\r\n",
			    HTTP_MAX_BODY);
	memset(big + n, 'b', HTTP_MAX_BODY);
	http_parser_init(&hp);
	assert_int_equal(feed(&hp, big, n + HTTP_MAX_BODY, 4096, &used), 1);
	assert_int_equal(used, n + HTTP_MAX_BODY);
	assert_int_equal(buf_used(&hp.body), HTTP_MAX_BODY);
	/* The parser is reusable after a big request. */
	assert_int_equal(feed_str(&hp, "GET /y HTTP/1.1\r\n\r\n"), 1);
	assert_string_equal(hp.path, "/y");
	assert_int_equal(buf_used(&hp.body), 0);
	http_parser_free(&hp);
	free(big);
}

static void test_expect_continue(void **state)
{
	struct http_parser hp;
	const char *head = "POST /x HTTP/1.1\r\nExpect: 100-continue\r\n"
			   "Content-Length: 3\r\n\r\n";
	size_t used;

	(void)state;
	http_parser_init(&hp);
	assert_int_equal(
		http_feed(&hp, (const uint8_t *)head, strlen(head), &used), 0);
	assert_true(hp.head_done);
	assert_true(hp.expect_continue);
	assert_int_equal(http_feed(&hp, (const uint8_t *)"abc", 3, &used), 1);
	assert_false(hp.expect_continue);
	/* No body: nothing to continue. */
	assert_int_equal(
		feed_str(&hp, "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
		1);
	assert_false(hp.expect_continue);
	http_parser_free(&hp);
}

static void test_response(void **state)
{
	struct buf out = { 0 };
	const char *want = "HTTP/1.1 200 OK\r\n"
			   "Content-Type: text/plain\r\n"
			   "Content-Length: 2\r\n"
			   "Connection: keep-alive\r\n"
			   "\r\n"
			   "ok";
	const char *want405 = "HTTP/1.1 405 Method Not Allowed\r\n"
			      "Content-Length: 4\r\n"
			      "Connection: close\r\n"
			      "Allow: GET\r\n"
			      "\r\n";

	(void)state;
	assert_int_equal(
		http_response(&out, 200, "text/plain", "ok", 2, NULL, 0), 0);
	assert_int_equal(buf_used(&out), strlen(want));
	assert_memory_equal(buf_head(&out), want, strlen(want));
	buf_reset(&out);
	assert_int_equal(http_response(&out, 405, NULL, "nope", 4,
				       "Allow: GET\r\n",
				       HTTP_R_CLOSE | HTTP_R_HEAD),
			 0);
	assert_int_equal(buf_used(&out), strlen(want405));
	assert_memory_equal(buf_head(&out), want405, strlen(want405));
	assert_string_equal(http_status_text(431),
			    "Request Header Fields Too Large");
	assert_string_equal(http_status_text(299), "Unknown");
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_pipelining),
		cmocka_unit_test(test_keep_alive),
		cmocka_unit_test(test_lenient_framing),
		cmocka_unit_test(test_percent),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_response),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
