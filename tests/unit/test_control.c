/* SPDX-License-Identifier: MIT */
/*
 * test_control.c - the control plane without sockets: HTTP bytes go through
 * control_conn_input against a real store (filled and made to wait through
 * store_exec, as the reactor would), and the responses are parsed back.
 * Checks routing and errors, every built-in handler, JSON validity (a small
 * strict validator below) and the Prometheus text line format. Reactor
 * counters are tested through metrics_write with fake per-reactor blocks;
 * the control plane itself is created without a server (srv = NULL).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "compiler.h"
#include "hash.h"
#include "helpers.h"

#include "control.h"
#include "metrics.h"
#include "outq.h"
#include "proto.h"
#include "stats.h"
#include "store.h"
#include "table.h"

#define NCLIENTS 4

struct fixture {
	struct store st;
	struct store_thread th;
	struct stats stats; /* th's counters */
	struct control *c;
	struct control_conn *cc;
	struct wait_state ws[NCLIENTS];
	struct outq out[NCLIENTS];
	struct buf req;
	struct buf resp; /* HTTP bytes out */
	/* the last parsed response */
	int status;
	char headers[2048];
	char *body; /* owned, NUL-terminated */
	size_t body_len;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(store_init(&f->st, 16, 1), 0);
	assert_int_equal(store_thread_init(&f->th, &f->st, &f->stats,
					   t_no_deliver, f),
			 0);
	for (uint32_t i = 0; i < NCLIENTS; i++) {
		struct sockaddr_in6 *a = &f->ws[i].peer;

		wait_state_init(&f->ws[i], (struct waiter_ref){ .slot = i });
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)(40000 + i));
		inet_pton(AF_INET6, "::ffff:10.0.0.1", &a->sin6_addr);
		a->sin6_addr.s6_addr[15] = (uint8_t)(1 + i);
	}
	f->c = control_create(NULL, &f->th);
	assert_non_null(f->c);
	f->cc = control_conn_create(f->c);
	assert_non_null(f->cc);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < NCLIENTS; i++) {
		store_client_gone(&f->th, &f->ws[i]);
		outq_free(&f->out[i]);
	}
	control_conn_destroy(f->cc);
	control_destroy(f->c);
	buf_free(&f->req);
	buf_free(&f->resp);
	free(f->body);
	store_thread_destroy(&f->th);
	store_destroy(&f->st);
	free(f);
	return 0;
}

/* Run the store request in f->req as client @cl. */
static void exec(struct fixture *f, int cl)
{
	struct proto_limits lim;
	struct proto_decoder d;
	struct proto_req r;
	size_t used;

	proto_limits_default(&lim);
	proto_decoder_init(&d, &lim, false);
	assert_int_equal(proto_decoder_feed(&d, buf_head(&f->req),
					    buf_used(&f->req), &used),
			 1);
	assert_int_equal(proto_parse(buf_head(&f->req), used, &r), 0);
	assert_int_equal(store_exec(&f->th, &f->ws[cl], &r, &f->out[cl]), 0);
	buf_reset(&f->req);
}

static void set(struct fixture *f, const char *k, size_t klen, const char *v,
		size_t vlen)
{
	assert_int_equal(proto_enc_key_val(&f->req, OP_SET, k, klen, v, vlen),
			 0);
	exec(f, 0);
}

static void wait_keys(struct fixture *f, int cl, size_t n, const char **keys)
{
	size_t lens[4];

	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(keys[i]);
	assert_int_equal(proto_enc_keys(&f->req, OP_WAIT, n,
					(const void *const *)keys, lens),
			 0);
	exec(f, cl);
}

static void key_i64(struct fixture *f, int cl, enum proto_op op, const char *k,
		    int64_t v)
{
	assert_int_equal(proto_enc_key_i64(&f->req, op, k, strlen(k), v), 0);
	exec(f, cl);
}

/*
 * Parse one response at the head of f->resp into status, headers, body
 * (consuming it). Returns false if there is none.
 */
static bool next_response(struct fixture *f)
{
	const char *p = (const char *)buf_head(&f->resp);
	size_t avail = buf_used(&f->resp);
	const char *end = avail ? memmem(p, avail, "\r\n\r\n", 4) : NULL;
	const char *cl;
	size_t hlen;

	if (!end)
		return false;
	hlen = (size_t)(end - p) + 4;
	assert_true(hlen < sizeof(f->headers));
	memcpy(f->headers, p, hlen);
	f->headers[hlen] = '\0';
	assert_int_equal(sscanf(f->headers, "HTTP/1.1 %d ", &f->status), 1);
	cl = strstr(f->headers, "\r\nContent-Length: ");
	assert_non_null(cl);
	f->body_len = strtoul(cl + 18, NULL, 10);
	free(f->body);
	f->body = calloc(1, f->body_len + 1);
	assert_non_null(f->body);
	assert_true(avail >= hlen + f->body_len);
	memcpy(f->body, p + hlen, f->body_len);
	buf_consume(&f->resp, hlen + f->body_len);
	return true;
}

/* Send @req (one or more requests) in one chunk; returns the input result. */
static int send_raw(struct fixture *f, const char *req, size_t len)
{
	return control_conn_input(f->cc, (const uint8_t *)req, len, &f->resp);
}

/* One request, one response (parsed into f). Returns the input result. */
static int http(struct fixture *f, const char *req)
{
	int ret = send_raw(f, req, strlen(req));

	assert_true(next_response(f));
	assert_int_equal(buf_used(&f->resp), 0);
	return ret;
}

static int get(struct fixture *f, const char *path)
{
	char req[1024];

	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
	return http(f, req);
}

static int post(struct fixture *f, const char *path)
{
	char req[1024];

	snprintf(req, sizeof(req),
		 "POST %s HTTP/1.1\r\nHost: x\r\n"
		 "Content-Length: 0\r\n\r\n",
		 path);
	return http(f, req);
}

static bool has_header(struct fixture *f, const char *line)
{
	char want[256];

	snprintf(want, sizeof(want), "\r\n%s\r\n", line);
	return strstr(f->headers, want) != NULL;
}

/* ------------------------------------------------------------------ */
/* A strict JSON validator (RFC 8259) for the handlers' output.        */

static const char *json_value(const char *p);

static const char *json_ws(const char *p)
{
	while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
		p++;
	return p;
}

static const char *json_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p != '"') {
		if ((unsigned char)*p < 0x20)
			return NULL;
		if (*p == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!strchr("0123456789abcdefABCDEF",
						    p[i]) ||
					    !p[i])
						return NULL;
				p += 4;
			} else if (!*p || !strchr("\"\\/bfnrt", *p)) {
				return NULL;
			}
		}
		p++;
	}
	return p + 1;
}

static const char *json_number(const char *p)
{
	const char *s;

	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (*p == '.') {
		s = ++p;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p == s)
			return NULL;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		s = p;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p == s)
			return NULL;
	}
	return p;
}

static const char *json_list(const char *p, char close, bool object)
{
	p = json_ws(p + 1);
	if (*p == close)
		return p + 1;
	for (;;) {
		if (object) {
			p = json_string(json_ws(p));
			if (!p)
				return NULL;
			p = json_ws(p);
			if (*p++ != ':')
				return NULL;
		}
		p = json_value(p);
		if (!p)
			return NULL;
		p = json_ws(p);
		if (*p == close)
			return p + 1;
		if (*p++ != ',')
			return NULL;
	}
}

static const char *json_value(const char *p)
{
	p = json_ws(p);
	switch (*p) {
	case '{':
		return json_list(p, '}', true);
	case '[':
		return json_list(p, ']', false);
	case '"':
		return json_string(p);
	case 't':
		return strncmp(p, "true", 4) ? NULL : p + 4;
	case 'f':
		return strncmp(p, "false", 5) ? NULL : p + 5;
	case 'n':
		return strncmp(p, "null", 4) ? NULL : p + 4;
	default:
		return json_number(p);
	}
}

static void assert_json(const char *s)
{
	const char *end = json_value(s);

	if (!end || *json_ws(end))
		fail_msg("invalid JSON: %s", s);
}

static void test_json_validator(void **state)
{
	(void)state;
	assert_non_null(
		json_value("{\"a\":[1,-2.5e3,\"x\\u00ff\",true,null]}"));
	assert_null(json_value("{\"a\":1,}"));
	assert_null(json_value("[\"\x01\"]"));
	assert_null(json_value("[01]"));
	assert_null(json_value("\"\\x\""));
}

/* ------------------------------------------------------------------ */

static void test_health(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(get(f, "/health"), 0);
	assert_int_equal(f->status, 200);
	assert_string_equal(f->body, "ok");
	assert_true(has_header(f, "Connection: keep-alive"));
	assert_true(has_header(f, "Content-Type: text/plain; charset=utf-8"));

	control_shutting_down(f->c, true);
	assert_int_equal(get(f, "/health"), 1);
	assert_int_equal(f->status, 503);
	assert_true(has_header(f, "Connection: close"));
}

static void test_routing_errors(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(get(f, "/nope"), 0);
	assert_int_equal(f->status, 404);
	assert_true(has_header(f, "Content-Type: application/json"));
	assert_json(f->body);

	assert_int_equal(get(f, "/handler/nope"), 0);
	assert_int_equal(f->status, 404);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "handler 'nope' not found"));

	assert_int_equal(http(f, "PUT /health HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(f->status, 405);
	assert_true(has_header(f, "Allow: GET, HEAD"));
	assert_json(f->body);

	assert_int_equal(http(f, "POST /metrics HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(f->status, 405);

	assert_int_equal(http(f, "DELETE /handler/keys HTTP/1.1\r\n\r\n"), 0);
	assert_int_equal(f->status, 405);
	assert_true(has_header(f, "Allow: GET, HEAD, POST"));

	/* Index page. */
	assert_int_equal(get(f, "/"), 0);
	assert_int_equal(f->status, 200);
	assert_non_null(strstr(f->body, "/metrics"));
}

static void test_head(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(send_raw(f, "HEAD /health HTTP/1.1\r\n\r\n", 25), 0);
	/* Headers only, but the length of the GET body. */
	assert_non_null(memmem(buf_head(&f->resp), buf_used(&f->resp),
			       "Content-Length: 2\r\n", 19));
	assert_int_equal(buf_used(&f->resp) >= 4, 1);
	assert_memory_equal(buf_head(&f->resp) + buf_used(&f->resp) - 4,
			    "\r\n\r\n", 4);
}

static void test_bad_requests(void **state)
{
	struct fixture *f = *state;
	char *big;

	assert_int_equal(http(f, "BLAH\r\n\r\n"), 1);
	assert_int_equal(f->status, 400);
	assert_true(has_header(f, "Connection: close"));
	assert_json(f->body);

	control_conn_destroy(f->cc);
	f->cc = control_conn_create(f->c);
	assert_int_equal(http(f, "POST /handler/ping HTTP/1.1\r\n"
				 "Transfer-Encoding: chunked\r\n\r\n"),
			 1);
	assert_int_equal(f->status, 411);

	control_conn_destroy(f->cc);
	f->cc = control_conn_create(f->c);
	assert_int_equal(http(f, "POST /handler/ping HTTP/1.1\r\n"
				 "Content-Length: 1000000\r\n\r\n"),
			 1);
	assert_int_equal(f->status, 413);

	control_conn_destroy(f->cc);
	f->cc = control_conn_create(f->c);
	big = malloc(HTTP_MAX_HEAD + 100);
	assert_non_null(big);
	memset(big, 'a', HTTP_MAX_HEAD + 100);
	memcpy(big, "GET /", 5);
	assert_int_equal(send_raw(f, big, HTTP_MAX_HEAD + 100), 1);
	assert_true(next_response(f));
	assert_int_equal(f->status, 431);
	free(big);
}

static void test_keep_alive_and_pipelining(void **state)
{
	struct fixture *f = *state;
	const char req[] =
		"GET /health HTTP/1.1\r\n\r\n"
		"POST /handler/ping HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
		"GET /handler/ HTTP/1.1\r\nConnection: close\r\n\r\n"
		"GET /health HTTP/1.1\r\n\r\n";

	/* Every split: the responses come out whole and in order. */
	for (size_t cut = 0; cut < sizeof(req) - 1; cut++) {
		int ret;

		control_conn_destroy(f->cc);
		f->cc = control_conn_create(f->c);
		buf_reset(&f->resp);
		ret = send_raw(f, req, cut);
		if (!ret)
			ret = send_raw(f, req + cut, sizeof(req) - 1 - cut);
		/* Closed after the third: the fourth is never answered. */
		assert_int_equal(ret, 1);
		assert_true(next_response(f));
		assert_string_equal(f->body, "ok");
		assert_true(next_response(f));
		assert_string_equal(f->body, "pong");
		assert_true(next_response(f));
		assert_true(has_header(f, "Connection: close"));
		assert_json(f->body);
		assert_false(next_response(f));
	}

	/* HTTP/1.0 closes unless asked to keep alive. */
	assert_int_equal(http(f, "GET /health HTTP/1.0\r\n\r\n"), 1);
	control_conn_destroy(f->cc);
	f->cc = control_conn_create(f->c);
	assert_int_equal(http(f, "GET /health HTTP/1.0\r\n"
				 "Connection: keep-alive\r\n\r\n"),
			 0);
	assert_true(has_header(f, "Connection: keep-alive"));
}

static void test_expect_continue(void **state)
{
	struct fixture *f = *state;
	const char *head = "POST /handler/ping HTTP/1.1\r\n"
			   "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n";

	assert_int_equal(send_raw(f, head, strlen(head)), 0);
	assert_int_equal(buf_used(&f->resp), 25);
	assert_memory_equal(buf_head(&f->resp), "HTTP/1.1 100 Continue\r\n\r\n",
			    25);
	buf_reset(&f->resp);
	assert_int_equal(send_raw(f, "hi", 2), 0);
	assert_true(next_response(f));
	assert_string_equal(f->body, "pong");
}

static int echo(void *arg, const struct handler_request *req,
		struct handler_response *resp)
{
	const char *who = handler_param(req, "who", NULL);
	char text[128];
	int n;

	(void)arg;
	n = snprintf(text, sizeof(text), "%s %s %.*s", req->method,
		     who ? who : "-", (int)req->body_len,
		     (const char *)req->body);
	resp->content_type = "text/x-echo";
	resp->status = 201;
	return buf_append(&resp->body, text, (size_t)n);
}

static int broken(void *arg, const struct handler_request *req,
		  struct handler_response *resp)
{
	(void)arg;
	(void)req;
	buf_append(&resp->body, "partial", 7);
	return -EIO;
}

static void test_registry(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(control_count(f->c), 7);
	assert_true(control_lookup(f->c, "keys"));
	assert_false(control_lookup(f->c, "echo"));
	assert_int_equal(control_register(f->c, "echo", echo, NULL), 0);
	assert_int_equal(control_register(f->c, "echo", echo, NULL), -EEXIST);
	assert_int_equal(control_register(f->c, "", echo, NULL), -EINVAL);
	assert_int_equal(control_register(f->c, "a/b", echo, NULL), -EINVAL);
	assert_int_equal(control_register(f->c, "a b", echo, NULL), -EINVAL);
	assert_int_equal(control_register(f->c, "broken", broken, NULL), 0);
	assert_string_equal(control_name(f->c, 7), "echo");
	assert_null(control_name(f->c, 9));

	assert_int_equal(get(f, "/handler/"), 0);
	assert_int_equal(f->status, 200);
	assert_true(has_header(f, "Content-Type: application/json"));
	assert_string_equal(f->body, "[\"barriers\",\"compact\",\"delete\","
				     "\"keys\",\"ping\",\"stats\",\"waiters\","
				     "\"echo\",\"broken\"]\n");
	assert_int_equal(get(f, "/handler"), 0);
	assert_json(f->body);

	assert_int_equal(http(f, "POST /handler/echo?who=a%20b HTTP/1.1\r\n"
				 "Content-Length: 5\r\n\r\nhello"),
			 0);
	assert_int_equal(f->status, 201);
	assert_true(has_header(f, "Content-Type: text/x-echo"));
	assert_string_equal(f->body, "POST a b hello");
	assert_int_equal(get(f, "/handler/echo"), 0);
	assert_string_equal(f->body, "GET - ");

	assert_int_equal(get(f, "/handler/broken"), 0);
	assert_int_equal(f->status, 500);
	assert_json(f->body);
	assert_null(strstr(f->body, "partial"));

	assert_int_equal(get(f, "/handler/ping"), 0);
	assert_int_equal(f->status, 200);
	assert_string_equal(f->body, "pong");
}

static void test_keys(void **state)
{
	struct fixture *f = *state;
	char big[2000];

	memset(big, 'v', sizeof(big));
	set(f, "/b", 2, "2", 1);
	set(f, "/a", 2, "hello \"world\"", 13);
	set(f, "/c\x01\xff", 4, "\x00\x01", 2);
	set(f, "/d", 2, big, sizeof(big));
	set(f, "x", 1, "", 0);

	assert_int_equal(get(f, "/handler/keys"), 0);
	assert_int_equal(f->status, 200);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "\"count\":5,\"returned\":5,"
					"\"truncated\":false"));
	/* Sorted; binary keys escaped; values shown when short and text. */
	assert_non_null(strstr(
		f->body,
		"{\"key\":\"/a\",\"size\":13,\"value\":\"hello \\\"world\\\"\"},\n"
		"{\"key\":\"/b\",\"size\":1,\"value\":\"2\"},\n"
		"{\"key\":\"/c\\u0001\\u00ff\",\"size\":2},\n"
		"{\"key\":\"/d\",\"size\":2000},\n"
		"{\"key\":\"x\",\"size\":0,\"value\":\"\"}"));

	assert_int_equal(get(f, "/handler/keys?prefix=/&limit=2"), 0);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "\"returned\":2,\"truncated\":true"));
	assert_null(strstr(f->body, "\"x\""));

	assert_int_equal(get(f, "/handler/keys?prefix=%2Fc%01"), 0);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "\"returned\":1,"));

	assert_int_equal(get(f, "/handler/keys?limit=0"), 0);
	assert_int_equal(f->status, 400);
	assert_json(f->body);
	assert_int_equal(get(f, "/handler/keys?limit=12x"), 0);
	assert_int_equal(f->status, 400);
	assert_int_equal(get(f, "/handler/keys?limit=-1"), 0);
	assert_int_equal(f->status, 400);
}

/* Does the store hold @k? */
static bool has_key(struct fixture *f, const char *k)
{
	return table_get(f->st.table, f->th.qt, hash_key(k, strlen(k)), k,
			 strlen(k)) != NULL;
}

/* The number after "@name": in the last response's body. */
static long long body_num(struct fixture *f, const char *name)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(f->body, pat);
	assert_non_null(p);
	return strtoll(p + strlen(pat), NULL, 10);
}

/*
 * POST /handler/delete?prefix=P: the keys under P, and only those, are
 * deleted, at most `limit` per request; the rest are left for the next
 * requests.
 */
static void test_delete_prefix(void **state)
{
	struct fixture *f = *state;
	static const char *const under[] = { "/nccl2_reconfigure/u1",
					     "/nccl2_reconfigure/u2",
					     "/nccl2_reconfigure/u3" };
	static const char *const kept[] = { "/nccl2_reconfigure", "/keep",
					    "nccl2_reconfigure/raw",
					    "/nccl_storekey_0" };
	const char *left = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(under); i++)
		set(f, under[i], strlen(under[i]), "id", 2);
	for (size_t i = 0; i < ARRAY_SIZE(kept); i++)
		set(f, kept[i], strlen(kept[i]), "v", 1);

	/* It changes the store: POST only; a prefix is required. */
	static const char *const refused[][2] = {
		{ "GET", "/handler/delete?prefix=/nccl2" },
		{ "POST", "/handler/delete" },
		{ "POST", "/handler/delete?prefix=" },
		{ "POST", "/handler/delete?prefix=/n&limit=0" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		bool is_get = !strcmp(refused[i][0], "GET");

		if (is_get)
			assert_int_equal(get(f, refused[i][1]), 0);
		else
			assert_int_equal(post(f, refused[i][1]), 0);
		assert_int_equal(f->status, is_get ? 405 : 400);
		assert_true(!is_get || has_header(f, "Allow: POST"));
		assert_json(f->body);
	}
	assert_int_equal(table_count(f->st.table), 7);

	/* Two now, the third in the next request. */
	assert_int_equal(post(f, "/handler/delete?prefix=%2Fnccl2_reconfigure"
				 "%2F&limit=2"),
			 0);
	assert_int_equal(f->status, 200);
	assert_true(has_header(f, "Content-Type: application/json"));
	assert_json(f->body);
	assert_non_null(strstr(f->body,
			       "{\"prefix\":\"/nccl2_reconfigure/\","
			       "\"deleted\":2,\"absent\":0,"
			       "\"remaining\":1,\"sample\":[\"/nccl2_"));
	assert_int_equal(table_count(f->st.table), 5);
	for (size_t i = 0; i < ARRAY_SIZE(under); i++) {
		if (!strstr(f->body, under[i])) {
			assert_null(left);
			left = under[i];
			assert_true(has_key(f, left));
		} else {
			assert_false(has_key(f, under[i]));
		}
	}
	assert_non_null(left);
	/* The third key deleted by a client meanwhile: absent, not deleted. */
	assert_int_equal(
		proto_enc_key(&f->req, OP_DELETE_KEY, left, strlen(left)), 0);
	exec(f, 0);
	assert_int_equal(post(f, "/handler/delete?prefix=/nccl2_reconfigure/"),
			 0);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "\"deleted\":0,\"absent\":1,"
					"\"remaining\":0,\"sample\":[]}"));
	for (size_t i = 0; i < ARRAY_SIZE(kept); i++)
		assert_true(has_key(f, kept[i]));

	/* Nothing left under it: a new walk, nothing deleted. */
	assert_int_equal(post(f, "/handler/delete?prefix=/nccl2_reconfigure/"),
			 0);
	assert_non_null(strstr(f->body, "\"deleted\":0,\"absent\":0,"
					"\"remaining\":0,"));
	assert_int_equal(table_count(f->st.table), 4);
}

/*
 * Many keys in chunks: each request deletes `limit` of the keys the first
 * one found; a key set meanwhile is left to the next deletion, and a
 * request for another prefix drops the pending one.
 */
static void test_delete_prefix_chunks(void **state)
{
	struct fixture *f = *state;
	char k[32];
	long long total = 0, remaining = 2000;

	for (int i = 0; i < 2000; i++) {
		snprintf(k, sizeof(k), "/big/%d", i);
		set(f, k, strlen(k), "0123456789", 10);
	}
	set(f, "/bigger", 7, "x", 1);
	for (int i = 0; remaining; i++) {
		assert_int_equal(post(f, "/handler/delete?prefix=/big/&"
					 "limit=300"),
				 0);
		assert_json(f->body);
		assert_int_equal(body_num(f, "deleted"),
				 remaining < 300 ? remaining : 300);
		total += body_num(f, "deleted");
		assert_int_equal(body_num(f, "remaining"), 2000 - total);
		remaining = body_num(f, "remaining");
		/* The 2,000, /bigger, and /big/new once it is set. */
		assert_int_equal(table_count(f->st.table),
				 2001 - total + (i > 0));
		if (i == 0)
			set(f, "/big/new", 8, "n", 1);
	}
	assert_int_equal(total, 2000);
	assert_true(has_key(f, "/big/new"));
	assert_true(has_key(f, "/bigger"));
	assert_int_equal(post(f, "/handler/delete?prefix=/big/"), 0);
	assert_int_equal(body_num(f, "deleted"), 1);
	assert_false(has_key(f, "/big/new"));

	/* Another prefix drops a pending deletion; the first starts over. */
	for (int i = 0; i < 4; i++) {
		snprintf(k, sizeof(k), "/p/%d", i);
		set(f, k, strlen(k), "x", 1);
	}
	assert_int_equal(post(f, "/handler/delete?prefix=/p/&limit=1"), 0);
	assert_int_equal(body_num(f, "remaining"), 3);
	assert_int_equal(post(f, "/handler/delete?prefix=/bigger&limit=1"), 0);
	assert_int_equal(body_num(f, "deleted"), 1);
	set(f, "/p/4", 4, "x", 1);
	assert_int_equal(post(f, "/handler/delete?prefix=/p/&limit=1"), 0);
	assert_int_equal(body_num(f, "remaining"), 3);
	assert_int_equal(post(f, "/handler/delete?prefix=/p/"), 0);
	assert_int_equal(body_num(f, "deleted"), 3);
	assert_int_equal(table_count(f->st.table), 0);
}

static void test_waiters(void **state)
{
	struct fixture *f = *state;
	const char *k12[] = { "/k1", "/k2" };
	const char *k1[] = { "/k1" };

	assert_int_equal(get(f, "/handler/waiters"), 0);
	assert_json(f->body);
	assert_string_equal(f->body, "{\"keys\":[],\"waited_keys\":0,"
				     "\"waits\":0}\n");

	set(f, "/k2", 3, "x", 1);
	wait_keys(f, 1, 2, k12); /* /k2 exists: waits on /k1 only */
	wait_keys(f, 2, 1, k1);
	assert_int_equal(get(f, "/handler/waiters"), 0);
	assert_int_equal(f->status, 200);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "\"key\":\"/k1\""));
	assert_non_null(strstr(f->body, "\"waiters\":2"));
	assert_non_null(strstr(f->body, "\"peer\":\"10.0.0.2:40001\""));
	assert_non_null(strstr(f->body, "\"peer\":\"10.0.0.3:40002\""));
	assert_non_null(strstr(f->body, "\"waited_keys\":1,\"waits\":2"));
	assert_null(strstr(f->body, "/k2"));
}

static void test_barriers(void **state)
{
	struct fixture *f = *state;
	const char *lm[] = { "/p/last_member" };
	const char *lw[] = { "/sb:last_worker" };

	assert_int_equal(get(f, "/handler/barriers"), 0);
	assert_json(f->body);
	assert_string_equal(f->body, "{\"barriers\":[],\"counters\":[\n"
				     "{\"key\":\"init/\",\"value\":null}]}\n");

	key_i64(f, 0, OP_ADD, "init/", 1);
	key_i64(f, 0, OP_ADD, "init/", 2);
	key_i64(f, 1, OP_BARRIER, "/bar", 3);
	key_i64(f, 2, OP_BARRIER, "/bar", 3);
	key_i64(f, 3, OP_ADD, "/p/num_members", 1);
	wait_keys(f, 3, 1, lm);
	key_i64(f, 0, OP_ADD, "/sb", 1);
	wait_keys(f, 0, 1, lw);

	assert_int_equal(get(f, "/handler/barriers"), 0);
	assert_int_equal(f->status, 200);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "{\"key\":\"/bar\",\"arrived\":2,"
					"\"world_size\":3,\"waiting\":2,"
					"\"peers\":["));
	assert_non_null(strstr(f->body, "\"peer\":\"10.0.0.2:40001\""));
	assert_non_null(strstr(f->body, "\"barrier_world_size\":3"));
	assert_non_null(strstr(f->body, "{\"key\":\"init/\",\"value\":3}"));
	assert_non_null(strstr(f->body, "{\"key\":\"/p/num_members\","
					"\"value\":1,\"awaited_key\":"
					"\"/p/last_member\",\"waiting\":1,"));
	assert_non_null(strstr(f->body, "{\"key\":\"/sb\",\"value\":1,"
					"\"awaited_key\":\"/sb:last_worker\""));

	/* The waiters view shows the barrier too. */
	assert_int_equal(get(f, "/handler/waiters"), 0);
	assert_json(f->body);
	assert_non_null(strstr(f->body, "\"key\":\"/bar\""));
}

/* Check every line of a Prometheus text exposition; returns the lines. */
static size_t check_prometheus(const char *text)
{
	size_t lines = 0;
	char name[128] = "";

	while (*text) {
		const char *nl = strchr(text, '\n');
		char line[512], word[128], type[32];
		int used = 0;

		assert_non_null(nl);
		assert_true((size_t)(nl - text) < sizeof(line));
		memcpy(line, text, (size_t)(nl - text));
		line[nl - text] = '\0';
		text = nl + 1;
		lines++;
		if (!strncmp(line, "# HELP ", 7)) {
			assert_int_equal(sscanf(line + 7, "%127[a-z_]%n", name,
						&used),
					 1);
			assert_true(line[7 + used] == ' ');
			continue;
		}
		if (!strncmp(line, "# TYPE ", 7)) {
			assert_int_equal(sscanf(line + 7, "%127[a-z_] %31s",
						word, type),
					 2);
			assert_string_equal(word, name);
			assert_true(!strcmp(type, "counter") ||
				    !strcmp(type, "gauge"));
			continue;
		}
		/* name{label="value"} 123  or  name 123 */
		assert_int_equal(sscanf(line, "%127[a-z_]%n", word, &used), 1);
		assert_string_equal(word, name);
		if (line[used] == '{') {
			char value[128];
			int u2 = 0;

			assert_int_equal(
				sscanf(line + used,
				       "{%127[a-z]=\"%127[A-Za-z0-9_]\"}%n",
				       word, value, &u2),
				2);
			used += u2;
		}
		assert_true(line[used] == ' ');
		assert_true(line[used + 1] >= '0' && line[used + 1] <= '9');
		assert_int_equal(strspn(line + used + 1, "0123456789"),
				 strlen(line + used + 1));
	}
	return lines;
}

static void test_metrics(void **state)
{
	struct fixture *f = *state;
	struct stats *s = calloc(2, sizeof(*s));
	const struct stats *rs[3];
	struct buf out = { 0 };
	char *text;

	assert_non_null(s);
	stat_add(&s[0].requests[OP_SET], 3);
	stat_add(&s[1].requests[OP_SET], 4);
	stat_add(&s[0].active, 2);
	stat_add(&s[1].accepted, 9);
	stat_add(&s[1].closed[STATS_CLOSE_EOF], 5);
	stat_add(&s[0].proto_errors[PROTO_E_BAD_MAGIC], 1);
	stat_add(&s[0].loops, 10);
	stat_add(&s[1].loops, 20);
	stat_add(&s[1].cqes, 33);
	rs[0] = &s[0];
	rs[1] = NULL; /* a reactor not created yet */
	rs[2] = &s[1];
	set(f, "/a", 2, "1234", 4);

	assert_int_equal(metrics_write(&out, false, "epoll", rs, 3, &f->st), 0);
	assert_int_equal(buf_append(&out, "", 1), 0);
	text = (char *)buf_head(&out);
	assert_true(check_prometheus(text) > 40);
	assert_non_null(
		strstr(text, "\nringstore_requests_total{op=\"SET\"} 7\n"));
	assert_non_null(
		strstr(text, "\nringstore_requests_total{op=\"BARRIER\"} 0\n"));
	assert_non_null(strstr(text, "\nringstore_connections_active 2\n"));
	assert_non_null(
		strstr(text, "\nringstore_connections_accepted_total 9\n"));
	assert_non_null(strstr(
		text,
		"\nringstore_connections_closed_total{reason=\"eof\"} 5\n"));
	assert_non_null(strstr(
		text,
		"\nringstore_protocol_errors_total{kind=\"bad_magic\"} 1\n"));
	assert_non_null(strstr(
		text,
		"\nringstore_reactor_loop_iterations_total{reactor=\"0\"} 10\n"));
	assert_non_null(strstr(
		text,
		"\nringstore_reactor_loop_iterations_total{reactor=\"1\"} 0\n"));
	assert_non_null(strstr(
		text,
		"\nringstore_reactor_loop_iterations_total{reactor=\"2\"} 20\n"));
	assert_non_null(strstr(
		text,
		"\nringstore_reactor_completions_total{reactor=\"2\"} 33\n"));
	assert_non_null(strstr(text, "\nringstore_keys 1\n"));
	assert_non_null(strstr(text, "\nringstore_stored_bytes 6\n"));
	assert_non_null(
		strstr(text, "# TYPE ringstore_requests_total counter\n"));
	assert_null(strstr(text, "ringstore_resident_memory_bytes 0\n"));
	assert_non_null(
		strstr(text, "\nringstore_info{backend=\"epoll\"} 1\n"));

	buf_reset(&out);
	assert_int_equal(metrics_write(&out, true, "io_uring", rs, 3, &f->st),
			 0);
	assert_int_equal(buf_append(&out, "", 1), 0);
	text = (char *)buf_head(&out);
	assert_json(text);
	assert_non_null(strstr(
		text,
		"\"ringstore_requests_total\":{\"VALIDATE\":0,\"SET\":7,"));
	assert_non_null(strstr(text, "\"ringstore_keys\":1,"));
	assert_non_null(strstr(text, "{\"backend\":\"io_uring\",\"ringstore_"));

	/* Through HTTP, with no server: no reactor counters, still valid. */
	assert_int_equal(get(f, "/metrics"), 0);
	assert_int_equal(f->status, 200);
	assert_true(has_header(
		f, "Content-Type: text/plain; version=0.0.4; charset=utf-8"));
	check_prometheus(f->body);
	assert_non_null(strstr(f->body, "\nringstore_keys 1\n"));
	assert_int_equal(get(f, "/handler/stats"), 0);
	assert_true(has_header(f, "Content-Type: application/json"));
	assert_json(f->body);
	buf_free(&out);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_validator),
		cmocka_unit_test_setup_teardown(test_health, setup, teardown),
		cmocka_unit_test_setup_teardown(test_routing_errors, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_head, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_keep_alive_and_pipelining,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_expect_continue, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_prefix, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_delete_prefix_chunks,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_waiters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_barriers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
