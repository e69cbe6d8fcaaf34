/* SPDX-License-Identifier: MIT */
/*
 * test_proto.c - unit tests for the TCPStore codec (common/proto.c).
 *
 * A table of realistic requests, at least one per opcode (with empty keys,
 * empty values, binary bytes and multi-key lists), is encoded with the
 * request encoders and then decoded whole, split at every byte offset, one
 * byte at a time and coalesced into one stream cut into chunks of many
 * sizes. Every decoded request is parsed back and compared field by field
 * with what was encoded. Further tests pin the handshake rules, every limit
 * at and one past its value, the byte examples of docs/protocol.md section 12
 * and the reply scanner (on replies written here as the server writes
 * them).
 */
#include "helpers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

struct str {
	const char *p;
	size_t len;
};

/* Literal with its exact length, embedded NULs included. */
#define STR(s)                   \
	{                        \
		s, sizeof(s) - 1 \
	}

struct sample {
	enum proto_op op;
	struct str key;
	struct str v0;
	struct str v1;
	int64_t num;
	uint32_t u32;
	size_t n;
	struct str keys[4];
	struct str vals[4];
};

static const struct sample samples[] = {
	{ .op = OP_VALIDATE, .u32 = PROTO_MAGIC },
	{ .op = OP_SET, .key = STR("/a"), .v0 = STR("xy") },
	{ .op = OP_SET, .key = STR(""), .v0 = STR("") },
	{ .op = OP_SET, .key = STR("/bin\0key"), .v0 = STR("\0\1\2\377") },
	{ .op = OP_COMPARE_SET,
	  .key = STR("/rdzv"),
	  .v0 = STR(""),
	  .v1 = STR("SENTINEL") },
	{ .op = OP_COMPARE_SET,
	  .key = STR("/rdzv"),
	  .v0 = STR("old"),
	  .v1 = STR("") },
	{ .op = OP_GET, .key = STR("/a") },
	{ .op = OP_GET, .key = STR("") },
	{ .op = OP_ADD, .key = STR("init/"), .num = 1 },
	{ .op = OP_ADD, .key = STR("/ctr"), .num = INT64_MIN },
	{ .op = OP_CHECK, .n = 0 },
	{ .op = OP_CHECK,
	  .n = 3,
	  .keys = { STR("/k1"), STR(""), STR("/longer/key/3") } },
	{ .op = OP_WAIT, .n = 1, .keys = { STR("/a") } },
	{ .op = OP_WAIT, .n = 2, .keys = { STR("/x"), STR("/yy") } },
	{ .op = OP_GETNUMKEYS },
	{ .op = OP_DELETE_KEY, .key = STR("/gone") },
	{ .op = OP_APPEND, .key = STR("/log"), .v0 = STR("line\n") },
	{ .op = OP_APPEND, .key = STR("/log"), .v0 = STR("") },
	{ .op = OP_MULTI_GET, .n = 0 },
	{ .op = OP_MULTI_GET,
	  .n = 4,
	  .keys = { STR("/m1"), STR("/m2"), STR(""), STR("/m4\0") } },
	{ .op = OP_MULTI_SET, .n = 0 },
	{ .op = OP_MULTI_SET,
	  .n = 3,
	  .keys = { STR("/s1"), STR(""), STR("/s3") },
	  .vals = { STR("v1"), STR("empty key"), STR("") } },
	{ .op = OP_CANCEL_WAIT },
	{ .op = OP_PING, .u32 = 12345 },
	{ .op = OP_PING, .u32 = 0xffffffffu },
	{ .op = OP_QUEUE_PUSH, .key = STR("/q"), .v0 = STR("job-1") },
	{ .op = OP_QUEUE_PUSH, .key = STR("/q"), .v0 = STR("") },
	{ .op = OP_QUEUE_POP, .key = STR("/q") },
	{ .op = OP_QUEUE_LEN, .key = STR("/q") },
	{ .op = OP_LIST_KEYS },
	{ .op = OP_BARRIER, .key = STR("/b"), .num = 4 },
	{ .op = OP_BARRIER, .key = STR("/b"), .num = -1 },
};

#define NSAMPLES (sizeof(samples) / sizeof(samples[0]))

static struct proto_limits deflim;

static int setup(void **state)
{
	(void)state;
	proto_limits_default(&deflim);
	return 0;
}

static void encode(struct buf *b, const struct sample *s)
{
	const void *kp[4], *vp[4];
	size_t kl[4], vl[4];
	int rc = -1;

	for (size_t i = 0; i < s->n; i++) {
		kp[i] = s->keys[i].p;
		kl[i] = s->keys[i].len;
		vp[i] = s->vals[i].p;
		vl[i] = s->vals[i].len;
	}
	switch (s->op) {
	case OP_VALIDATE:
		rc = proto_enc_validate(b);
		break;
	case OP_PING:
		rc = proto_enc_ping(b, s->u32);
		break;
	case OP_GETNUMKEYS:
	case OP_CANCEL_WAIT:
	case OP_LIST_KEYS:
		rc = proto_enc_bare(b, s->op);
		break;
	case OP_GET:
	case OP_DELETE_KEY:
	case OP_QUEUE_POP:
	case OP_QUEUE_LEN:
		rc = proto_enc_key(b, s->op, s->key.p, s->key.len);
		break;
	case OP_SET:
	case OP_APPEND:
	case OP_QUEUE_PUSH:
		rc = proto_enc_key_val(b, s->op, s->key.p, s->key.len, s->v0.p,
				       s->v0.len);
		break;
	case OP_COMPARE_SET:
		rc = proto_enc_compare_set(b, s->key.p, s->key.len, s->v0.p,
					   s->v0.len, s->v1.p, s->v1.len);
		break;
	case OP_ADD:
	case OP_BARRIER:
		rc = proto_enc_key_i64(b, s->op, s->key.p, s->key.len, s->num);
		break;
	case OP_CHECK:
	case OP_WAIT:
	case OP_MULTI_GET:
		rc = proto_enc_keys(b, s->op, s->n, kp, kl);
		break;
	case OP_MULTI_SET:
		rc = proto_enc_multi_set(b, s->n, kp, kl, vp, vl);
		break;
	default:
		fail_msg("no encoder for op %d", s->op);
	}
	assert_int_equal(rc, 0);
}

/* The request size, computed from docs/protocol.md's table, not from proto.c. */
static size_t expected_len(const struct sample *s)
{
	size_t len = 1;

	switch (s->op) {
	case OP_VALIDATE:
	case OP_PING:
		return len + 4;
	case OP_GETNUMKEYS:
	case OP_CANCEL_WAIT:
	case OP_LIST_KEYS:
		return len;
	case OP_COMPARE_SET:
		len += 8 + s->v1.len;
		/* fall through */
	case OP_SET:
	case OP_APPEND:
	case OP_QUEUE_PUSH:
		len += 8 + s->v0.len;
		/* fall through */
	case OP_GET:
	case OP_DELETE_KEY:
	case OP_QUEUE_POP:
	case OP_QUEUE_LEN:
		return len + 8 + s->key.len;
	case OP_ADD:
	case OP_BARRIER:
		return len + 8 + s->key.len + 8;
	case OP_MULTI_SET:
		for (size_t i = 0; i < s->n; i++)
			len += 8 + s->vals[i].len;
		/* fall through */
	default: /* CHECK, WAIT, MULTI_GET */
		len += 8;
		for (size_t i = 0; i < s->n; i++)
			len += 8 + s->keys[i].len;
		return len;
	}
}

static void assert_slice(struct proto_slice sl, struct str want)
{
	assert_int_equal(sl.len, want.len);
	if (want.len)
		assert_memory_equal(sl.p, want.p, want.len);
}

/* Parse @len bytes at @p and compare every field with @s. */
static void check_parsed(const uint8_t *p, size_t len, const struct sample *s)
{
	struct proto_req req;

	assert_int_equal(proto_parse(p, len, &req), 0);
	{
		struct proto_req fr;

		assert_int_equal(proto_parse_framed(p, len, &fr), 0);
		assert_memory_equal(&fr, &req, sizeof(fr));
	}
	assert_int_equal(req.op, s->op);
	assert_ptr_equal(req.end, p + len);
	switch (s->op) {
	case OP_VALIDATE:
	case OP_PING:
		assert_int_equal(req.u32, s->u32);
		break;
	case OP_COMPARE_SET:
		assert_slice(req.val[1], s->v1);
		/* fall through */
	case OP_SET:
	case OP_APPEND:
	case OP_QUEUE_PUSH:
		assert_slice(req.val[0], s->v0);
		/* fall through */
	case OP_GET:
	case OP_DELETE_KEY:
	case OP_QUEUE_POP:
	case OP_QUEUE_LEN:
		assert_slice(req.key, s->key);
		break;
	case OP_ADD:
	case OP_BARRIER:
		assert_slice(req.key, s->key);
		assert_true(req.num == s->num);
		break;
	case OP_CHECK:
	case OP_WAIT:
	case OP_MULTI_GET:
	case OP_MULTI_SET: {
		const uint8_t *cur = req.list;
		struct proto_slice sl;

		assert_int_equal(req.count, s->n);
		assert_non_null(cur);
		/* List items are not single-key fields. */
		assert_null(req.key.p);
		assert_null(req.val[0].p);
		for (size_t i = 0; i < s->n; i++) {
			proto_next_str(&cur, &sl);
			assert_slice(sl, s->keys[i]);
			if (s->op == OP_MULTI_SET) {
				proto_next_str(&cur, &sl);
				assert_slice(sl, s->vals[i]);
			}
		}
		assert_ptr_equal(cur, req.end);
		break;
	}
	default: /* GETNUMKEYS, CANCEL_WAIT, LIST_KEYS: nothing to check */
		assert_true(len == 1);
		break;
	}
}

static void dec_init(struct proto_decoder *d, const struct proto_limits *lim,
		     enum proto_op op)
{
	proto_decoder_init(d, lim, op == OP_VALIDATE);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(proto_op_name(OP_VALIDATE), "VALIDATE");
	assert_string_equal(proto_op_name(OP_COMPARE_SET), "COMPARE_SET");
	assert_string_equal(proto_op_name(OP_BARRIER), "BARRIER");
	assert_string_equal(proto_op_name(19), "?");
	assert_string_equal(proto_op_name(1000), "?");
	assert_string_equal(proto_err_name(PROTO_E_NONE), "none");
	assert_string_equal(proto_err_name(PROTO_E_NOT_VALIDATED),
			    "not_validated");
	assert_string_equal(proto_err_name(PROTO_E_BAD_MAGIC), "bad_magic");
	assert_string_equal(proto_err_name(PROTO_E_UNKNOWN_OP), "unknown_op");
	assert_string_equal(proto_err_name(PROTO_E_KEY_TOO_LONG),
			    "key_too_long");
	assert_string_equal(proto_err_name(PROTO_E_VALUE_TOO_LONG),
			    "value_too_long");
	assert_string_equal(proto_err_name(PROTO_E_TOO_MANY_KEYS),
			    "too_many_keys");
	assert_string_equal(proto_err_name(PROTO_E_REQUEST_TOO_LONG),
			    "request_too_long");
	assert_string_equal(proto_err_name(PROTO_E__COUNT), "?");
	assert_string_equal(proto_err_text(PROTO_E_BAD_MAGIC),
			    "VALIDATE with a wrong magic number");
	assert_string_equal(proto_err_text(PROTO_E_REQUEST_TOO_LONG),
			    "request larger than the limit");
}

static void test_limits_default(void **state)
{
	struct proto_limits lim;

	(void)state;
	memset(&lim, 0xa5, sizeof(lim));
	proto_limits_default(&lim);
	assert_int_equal(lim.max_key, 8192);
	assert_int_equal(lim.max_value, 8388608);
	assert_int_equal(lim.max_keys, 131072);
	assert_int_equal(lim.max_request, 64u << 20);
}

/* Each sample encoded alone into a buffer of its own, handed to @fn. */
static void each_sample(void (*fn)(const struct sample *s, struct buf *b))
{
	for (size_t k = 0; k < NSAMPLES; k++) {
		struct buf b = { 0 };

		encode(&b, &samples[k]);
		fn(&samples[k], &b);
		buf_free(&b);
	}
}

/* Encoded size, whole feed, trailing bytes, parse. */
static void whole(const struct sample *s, struct buf *b)
{
	size_t len = buf_used(b), used = 12345;
	struct proto_decoder d;

	assert_int_equal(len, expected_len(s));
	dec_init(&d, &deflim, s->op);
	assert_int_equal(proto_decoder_feed(&d, b->data, len, &used), 1);
	assert_int_equal(used, len);
	assert_int_equal(d.req_len, len);
	assert_int_equal(d.op, s->op);
	assert_int_equal(d.err, PROTO_E_NONE);
	assert_false(d.handshake);
	check_parsed(b->data, len, s);

	/* Bytes of a following request are left alone. */
	assert_int_equal(buf_append(b, "\x07\x07\x07", 3), 0);
	dec_init(&d, &deflim, s->op);
	assert_int_equal(proto_decoder_feed(&d, b->data, len + 3, &used), 1);
	assert_int_equal(used, len);
	assert_int_equal(d.req_len, len);
}

static void test_whole(void **state)
{
	(void)state;
	each_sample(whole);
}

/* Split into two feeds at every byte offset. */
static void split_every_offset(const struct sample *s, struct buf *b)
{
	size_t len = buf_used(b);

	for (size_t cut = 0; cut < len; cut++) {
		struct proto_decoder d;
		size_t used = 999;

		dec_init(&d, &deflim, s->op);
		assert_int_equal(proto_decoder_feed(&d, b->data, cut, &used),
				 0);
		assert_int_equal(used, cut);
		assert_int_equal(d.req_len, cut);
		assert_int_equal(proto_decoder_feed(&d, b->data + cut,
						    len - cut, &used),
				 1);
		assert_int_equal(used, len - cut);
		assert_int_equal(d.req_len, len);
	}
}

static void test_split_every_offset(void **state)
{
	(void)state;
	each_sample(split_every_offset);
}

/* Fed one byte at a time: complete exactly on the last. */
static void byte_at_a_time(const struct sample *s, struct buf *b)
{
	size_t len = buf_used(b), used;
	struct proto_decoder d;

	dec_init(&d, &deflim, s->op);
	for (size_t i = 0; i < len; i++) {
		int want = i + 1 == len ? 1 : 0;

		assert_int_equal(proto_decoder_feed(&d, b->data + i, 1, &used),
				 want);
		assert_int_equal(used, 1);
		if (want == 0 && s->op == OP_VALIDATE)
			assert_true(d.handshake);
	}
	assert_int_equal(d.req_len, len);
}

static void test_byte_at_a_time(void **state)
{
	(void)state;
	each_sample(byte_at_a_time);
}

/*
 * Decode @len bytes of a stream of all samples (VALIDATE first) delivered
 * in chunks whose sizes cycle through @sizes, gathering split requests into
 * a spill buffer like the server does, and check each parsed request.
 */
static void drive_stream(const uint8_t *p, size_t len, const size_t *sizes,
			 size_t nsizes)
{
	struct proto_decoder d;
	struct buf spill = { 0 };
	size_t idx = 0, off = 0, turn = 0;

	proto_decoder_init(&d, &deflim, true);
	while (off < len) {
		size_t n = sizes[turn++ % nsizes];
		size_t pos = 0;

		if (n > len - off)
			n = len - off;
		while (pos < n) {
			size_t used = 0;
			int rc = proto_decoder_feed(&d, p + off + pos, n - pos,
						    &used);

			assert_true(rc == 0 || rc == 1);
			assert_true(used <= n - pos);
			assert_int_equal(
				buf_append(&spill, p + off + pos, used), 0);
			pos += used;
			if (rc == 0) {
				assert_int_equal(pos, n);
				continue;
			}
			assert_true(idx < NSAMPLES);
			assert_int_equal(buf_used(&spill), d.req_len);
			check_parsed(buf_head(&spill), buf_used(&spill),
				     &samples[idx]);
			idx++;
			buf_reset(&spill);
			proto_decoder_next(&d);
			assert_false(d.in_req);
		}
		off += n;
	}
	assert_int_equal(idx, NSAMPLES);
	assert_false(d.in_req);
	assert_false(d.handshake);
	buf_free(&spill);
}

static void test_coalesced(void **state)
{
	static const size_t fixed[] = {
		1, 2, 3, 4, 5, 7, 8, 9, 13, 17, 64, 4096
	};
	static const size_t mixed[] = { 9, 1, 30, 2, 8, 5, 100, 3 };
	struct buf b = { 0 };

	(void)state;
	for (size_t k = 0; k < NSAMPLES; k++)
		encode(&b, &samples[k]);
	size_t total = 0;
	for (size_t k = 0; k < NSAMPLES; k++)
		total += expected_len(&samples[k]);
	assert_int_equal(buf_used(&b), total);

	/* Everything in one feed. */
	drive_stream(b.data, total, &total, 1);
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		drive_stream(b.data, total, &fixed[i], 1);
	drive_stream(b.data, total, mixed, sizeof(mixed) / sizeof(mixed[0]));
	buf_free(&b);
}

/* A truncated or padded request is not one well-formed request. */
static void parse_rejects(const struct sample *s, struct buf *b)
{
	size_t len = buf_used(b);
	struct proto_req req;
	uint8_t tmp[256];

	(void)s;
	assert_true(len < sizeof(tmp));
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(proto_parse(b->data, cut, &req), -EPROTO);
	memcpy(tmp, b->data, len);
	tmp[len] = 0;
	assert_int_equal(proto_parse(tmp, len + 1, &req), -EPROTO);
}

static void test_parse_rejects(void **state)
{
	struct proto_req req;
	uint8_t tmp[1];

	(void)state;
	each_sample(parse_rejects);
	tmp[0] = OP__COUNT;
	assert_int_equal(proto_parse(tmp, 1, &req), -EPROTO);
	tmp[0] = 255;
	assert_int_equal(proto_parse(tmp, 1, &req), -EPROTO);

	/* A count that promises more keys than the bytes hold. */
	static const uint8_t liar[] = { OP_CHECK, 2, 0, 0, 0, 0, 0, 0, 0,
					0,        0, 0, 0, 0, 0, 0, 0 };
	assert_int_equal(proto_parse(liar, sizeof(liar), &req), -EPROTO);
	/* A string length far past the end (no wrap-around). */
	static const uint8_t huge[] = { OP_GET, 0xf8, 0xff, 0xff, 0xff,
					0xff,   0xff, 0xff, 0xff, 'x' };
	assert_int_equal(proto_parse(huge, sizeof(huge), &req), -EPROTO);
}

static void test_handshake(void **state)
{
	static const uint8_t set[] = { OP_SET, 2, 0, 0, 0, 0, 0, 0, 0 };
	static const uint8_t validate[] = { 0x00, 0xce, 0xf7, 0x85, 0x3c };
	static const uint8_t bad[] = { 0x00, 0xce, 0xf7, 0x85, 0x3d };
	struct proto_decoder d;
	size_t used;

	(void)state;
	/* A non-VALIDATE first request is refused on its first byte. */
	proto_decoder_init(&d, &deflim, true);
	assert_int_equal(proto_decoder_feed(&d, set, sizeof(set), &used),
			 -EPROTO);
	assert_int_equal(used, 1);
	assert_int_equal(d.err, PROTO_E_NOT_VALIDATED);
	proto_decoder_init(&d, &deflim, true);
	assert_int_equal(proto_decoder_feed(&d, set, 1, &used), -EPROTO);
	assert_int_equal(d.err, PROTO_E_NOT_VALIDATED);
	/* Opcodes past the table too, and PING before VALIDATE. */
	static const uint8_t others[] = { OP_PING, 19, 255 };
	for (size_t i = 0; i < sizeof(others); i++) {
		proto_decoder_init(&d, &deflim, true);
		assert_int_equal(proto_decoder_feed(&d, &others[i], 1, &used),
				 -EPROTO);
		assert_int_equal(d.err, PROTO_E_NOT_VALIDATED);
	}

	/* Wrong magic, whole and byte by byte. */
	proto_decoder_init(&d, &deflim, true);
	assert_int_equal(proto_decoder_feed(&d, bad, sizeof(bad), &used),
			 -EPROTO);
	assert_int_equal(d.err, PROTO_E_BAD_MAGIC);
	assert_int_equal(used, 5);
	assert_true(d.handshake);
	proto_decoder_init(&d, &deflim, true);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(proto_decoder_feed(&d, bad + i, 1, &used), 0);
	assert_int_equal(proto_decoder_feed(&d, bad + 4, 1, &used), -EPROTO);
	assert_int_equal(d.err, PROTO_E_BAD_MAGIC);

	/* VALIDATE clears the handshake; a second one is unknown. */
	proto_decoder_init(&d, &deflim, true);
	assert_true(d.handshake);
	assert_int_equal(
		proto_decoder_feed(&d, validate, sizeof(validate), &used), 1);
	assert_false(d.handshake);
	proto_decoder_next(&d);
	assert_int_equal(proto_decoder_feed(&d, validate, sizeof(validate),
					    &used),
			 -EPROTO);
	assert_int_equal(used, 1);
	assert_int_equal(d.err, PROTO_E_UNKNOWN_OP);

	/* Unknown opcodes after the handshake, refused on the first byte. */
	static const uint8_t unknown[] = { 19, 255 };
	for (size_t i = 0; i < sizeof(unknown); i++) {
		uint8_t req[9] = { unknown[i], 1 };

		proto_decoder_init(&d, &deflim, false);
		assert_int_equal(proto_decoder_feed(&d, req, 9, &used),
				 -EPROTO);
		assert_int_equal(used, 1);
		assert_int_equal(d.err, PROTO_E_UNKNOWN_OP);
	}
	/* Opcode 18, the last one, is known. */
	proto_decoder_init(&d, &deflim, false);
	assert_int_equal(
		proto_decoder_feed(&d, (const uint8_t *)"\x12", 1, &used), 0);
	assert_int_equal(used, 1);

	/* An empty feed is need-more and changes nothing. */
	proto_decoder_init(&d, &deflim, true);
	assert_int_equal(proto_decoder_feed(&d, validate, 0, &used), 0);
	assert_int_equal(used, 0);
	assert_false(d.in_req);
}

/*
 * Feed @len bytes one at a time; expect need-more up to byte @at (1-based),
 * where @rc and @err must appear. Proves the check runs before the payload.
 */
static void expect_fail_at(const struct proto_limits *lim, const uint8_t *p,
			   size_t len, size_t at, int rc, enum proto_err err)
{
	struct proto_decoder d;
	size_t used;

	assert_true(at <= len);
	proto_decoder_init(&d, lim, false);
	assert_int_equal(proto_decoder_feed(&d, p, len, &used), rc);
	assert_int_equal(used, at);
	assert_int_equal(d.err, err);

	proto_decoder_init(&d, lim, false);
	for (size_t i = 0; i + 1 < at; i++)
		assert_int_equal(proto_decoder_feed(&d, p + i, 1, &used), 0);
	assert_int_equal(proto_decoder_feed(&d, p + at - 1, 1, &used), rc);
	assert_int_equal(d.err, err);
}

static void expect_ok(const struct proto_limits *lim, const uint8_t *p,
		      size_t len)
{
	struct proto_decoder d;
	size_t used;

	proto_decoder_init(&d, lim, false);
	assert_int_equal(proto_decoder_feed(&d, p, len, &used), 1);
	assert_int_equal(used, len);
	assert_int_equal(d.err, PROTO_E_NONE);
}

static const char filler[64] = "0123456789abcdefghijklmnopqrstuvwxyz"
			       "ABCDEFGHIJKLMNOPQRSTUVWXYZ.";

static void test_limit_key(void **state)
{
	struct proto_limits lim = { .max_key = 4,
				    .max_value = 6,
				    .max_keys = 3,
				    .max_request = 1000 };
	static const enum proto_op ops[] = { OP_GET, OP_DELETE_KEY,
					     OP_QUEUE_POP, OP_QUEUE_LEN };
	struct buf b = { 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		buf_reset(&b);
		assert_int_equal(proto_enc_key(&b, ops[i], filler, 4), 0);
		expect_ok(&lim, b.data, b.len);
		buf_reset(&b);
		assert_int_equal(proto_enc_key(&b, ops[i], filler, 5), 0);
		expect_fail_at(&lim, b.data, b.len, 9, -EMSGSIZE,
			       PROTO_E_KEY_TOO_LONG);
	}
	/* Keys of key/value ops, ADD, BARRIER, COMPARE_SET. */
	buf_reset(&b);
	assert_int_equal(proto_enc_key_val(&b, OP_SET, filler, 5, "v", 1), 0);
	expect_fail_at(&lim, b.data, b.len, 9, -EMSGSIZE, PROTO_E_KEY_TOO_LONG);
	buf_reset(&b);
	assert_int_equal(proto_enc_key_i64(&b, OP_ADD, filler, 4, 1), 0);
	expect_ok(&lim, b.data, b.len);
	buf_reset(&b);
	assert_int_equal(proto_enc_key_i64(&b, OP_BARRIER, filler, 5, 2), 0);
	expect_fail_at(&lim, b.data, b.len, 9, -EMSGSIZE, PROTO_E_KEY_TOO_LONG);
	buf_reset(&b);
	assert_int_equal(proto_enc_compare_set(&b, filler, 5, "", 0, "d", 1),
			 0);
	expect_fail_at(&lim, b.data, b.len, 9, -EMSGSIZE, PROTO_E_KEY_TOO_LONG);

	/* The second key of a list; the first is at the limit. */
	const void *keys[] = { filler, filler };
	size_t klens[] = { 4, 5 };
	buf_reset(&b);
	assert_int_equal(proto_enc_keys(&b, OP_WAIT, 2, keys, klens), 0);
	expect_fail_at(&lim, b.data, b.len, 9 + 12 + 8, -EMSGSIZE,
		       PROTO_E_KEY_TOO_LONG);
	klens[1] = 4;
	buf_reset(&b);
	assert_int_equal(proto_enc_keys(&b, OP_WAIT, 2, keys, klens), 0);
	expect_ok(&lim, b.data, b.len);

	/* A key length with the top bit set is simply too long. */
	static const uint8_t neg[] = { OP_GET, 0, 0, 0, 0, 0, 0, 0, 0x80 };
	expect_fail_at(&lim, neg, sizeof(neg), 9, -EMSGSIZE,
		       PROTO_E_KEY_TOO_LONG);
	buf_free(&b);
}

static void test_limit_value(void **state)
{
	struct proto_limits lim = { .max_key = 4,
				    .max_value = 6,
				    .max_keys = 3,
				    .max_request = 1000 };
	static const enum proto_op ops[] = { OP_SET, OP_APPEND, OP_QUEUE_PUSH };
	struct buf b = { 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		buf_reset(&b);
		assert_int_equal(
			proto_enc_key_val(&b, ops[i], "k", 1, filler, 6), 0);
		expect_ok(&lim, b.data, b.len);
		buf_reset(&b);
		assert_int_equal(
			proto_enc_key_val(&b, ops[i], "k", 1, filler, 7), 0);
		expect_fail_at(&lim, b.data, b.len, 18, -EMSGSIZE,
			       PROTO_E_VALUE_TOO_LONG);
	}
	/* Both COMPARE_SET values are values. */
	buf_reset(&b);
	assert_int_equal(
		proto_enc_compare_set(&b, "k", 1, filler, 6, filler, 6), 0);
	expect_ok(&lim, b.data, b.len);
	buf_reset(&b);
	assert_int_equal(
		proto_enc_compare_set(&b, "k", 1, filler, 7, filler, 1), 0);
	expect_fail_at(&lim, b.data, b.len, 18, -EMSGSIZE,
		       PROTO_E_VALUE_TOO_LONG);
	buf_reset(&b);
	assert_int_equal(
		proto_enc_compare_set(&b, "k", 1, filler, 6, filler, 7), 0);
	expect_fail_at(&lim, b.data, b.len, 18 + 6 + 8, -EMSGSIZE,
		       PROTO_E_VALUE_TOO_LONG);

	/* MULTI_SET: the value of the second pair. */
	const void *kp[] = { "a", "b" }, *vp[] = { filler, filler };
	size_t kl[] = { 1, 1 }, vl[] = { 6, 7 };
	buf_reset(&b);
	assert_int_equal(proto_enc_multi_set(&b, 2, kp, kl, vp, vl), 0);
	expect_fail_at(&lim, b.data, b.len, 9 + 9 + 14 + 9 + 8, -EMSGSIZE,
		       PROTO_E_VALUE_TOO_LONG);
	vl[1] = 6;
	buf_reset(&b);
	assert_int_equal(proto_enc_multi_set(&b, 2, kp, kl, vp, vl), 0);
	expect_ok(&lim, b.data, b.len);
	/* Keys keep the key limit (4), not the value limit (6). */
	kp[1] = filler;
	kl[1] = 5;
	buf_reset(&b);
	assert_int_equal(proto_enc_multi_set(&b, 2, kp, kl, vp, vl), 0);
	expect_fail_at(&lim, b.data, b.len, 9 + 9 + 14 + 8, -EMSGSIZE,
		       PROTO_E_KEY_TOO_LONG);
	buf_free(&b);
}

static void test_limit_count(void **state)
{
	struct proto_limits lim = { .max_key = 4,
				    .max_value = 6,
				    .max_keys = 3,
				    .max_request = 1000 };
	static const enum proto_op ops[] = { OP_CHECK, OP_WAIT, OP_MULTI_GET };
	const void *kp[] = { "a", "b", "c", "d" };
	const void *vp[] = { "1", "2", "3", "4" };
	size_t kl[] = { 1, 1, 1, 1 };
	struct buf b = { 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		buf_reset(&b);
		assert_int_equal(proto_enc_keys(&b, ops[i], 3, kp, kl), 0);
		expect_ok(&lim, b.data, b.len);
		buf_reset(&b);
		assert_int_equal(proto_enc_keys(&b, ops[i], 4, kp, kl), 0);
		expect_fail_at(&lim, b.data, b.len, 9, -EMSGSIZE,
			       PROTO_E_TOO_MANY_KEYS);
	}
	buf_reset(&b);
	assert_int_equal(proto_enc_multi_set(&b, 3, kp, kl, vp, kl), 0);
	expect_ok(&lim, b.data, b.len);
	buf_reset(&b);
	assert_int_equal(proto_enc_multi_set(&b, 4, kp, kl, vp, kl), 0);
	expect_fail_at(&lim, b.data, b.len, 9, -EMSGSIZE,
		       PROTO_E_TOO_MANY_KEYS);
	buf_free(&b);
}

/* The client writes MULTI_SET's count as i64: -1 must not pass. */
static void test_multi_set_negative(void **state)
{
	struct proto_limits lim = deflim;
	uint8_t req[9 + 18] = { OP_MULTI_SET };
	int64_t n = -1;

	(void)state;
	memcpy(req + 1, &n, 8);
	expect_fail_at(&deflim, req, sizeof(req), 9, -EMSGSIZE,
		       PROTO_E_TOO_MANY_KEYS);
	/* Even with no configured count limit at all. */
	lim.max_keys = UINT64_MAX;
	expect_fail_at(&lim, req, sizeof(req), 9, -EMSGSIZE,
		       PROTO_E_TOO_MANY_KEYS);
	n = INT64_MIN;
	memcpy(req + 1, &n, 8);
	expect_fail_at(&lim, req, sizeof(req), 9, -EMSGSIZE,
		       PROTO_E_TOO_MANY_KEYS);
	/* The same count bytes in a CHECK are rejected the same way. */
	req[0] = OP_CHECK;
	expect_fail_at(&lim, req, sizeof(req), 9, -EMSGSIZE,
		       PROTO_E_TOO_MANY_KEYS);
}

static void test_limit_request(void **state)
{
	struct proto_limits lim;
	struct buf b = { 0 };

	(void)state;
	proto_limits_default(&lim);

	/* SET of a 10-byte key and 20-byte value: 1 + 8 + 10 + 8 + 20. */
	assert_int_equal(proto_enc_key_val(&b, OP_SET, filler, 10, filler, 20),
			 0);
	assert_int_equal(b.len, 47);
	lim.max_request = 47;
	expect_ok(&lim, b.data, b.len);
	lim.max_request = 46;
	expect_fail_at(&lim, b.data, b.len, 27, -EMSGSIZE,
		       PROTO_E_REQUEST_TOO_LONG);
	/* The key alone already overflows: caught at the key length. */
	lim.max_request = 18;
	expect_fail_at(&lim, b.data, b.len, 9, -EMSGSIZE,
		       PROTO_E_REQUEST_TOO_LONG);
	lim.max_request = 19;
	expect_fail_at(&lim, b.data, b.len, 27, -EMSGSIZE,
		       PROTO_E_REQUEST_TOO_LONG);

	/* A trailing fixed field counts too: ADD is 1 + 8 + 10 + 8. */
	buf_reset(&b);
	assert_int_equal(proto_enc_key_i64(&b, OP_ADD, filler, 10, 5), 0);
	lim.max_request = 27;
	expect_ok(&lim, b.data, b.len);
	lim.max_request = 26;
	expect_fail_at(&lim, b.data, b.len, 27, -EMSGSIZE,
		       PROTO_E_REQUEST_TOO_LONG);

	/* A list of empty keys grows only through its length fields. */
	const void *kp[] = { "", "", "" };
	size_t kl[] = { 0, 0, 0 };
	buf_reset(&b);
	assert_int_equal(proto_enc_keys(&b, OP_MULTI_GET, 3, kp, kl), 0);
	lim.max_request = 33;
	expect_ok(&lim, b.data, b.len);
	lim.max_request = 32;
	expect_fail_at(&lim, b.data, b.len, 33, -EMSGSIZE,
		       PROTO_E_REQUEST_TOO_LONG);

	/* A huge announced length cannot wrap the sum past the check. */
	static const uint8_t huge[] = { OP_SET, 1,    0,    0,    0,    0,
					0,      0,    0,    'k',  0xff, 0xff,
					0xff,   0xff, 0xff, 0xff, 0xff, 0xff };
	lim.max_key = UINT64_MAX;
	lim.max_value = UINT64_MAX;
	lim.max_request = UINT64_MAX - 4;
	expect_fail_at(&lim, huge, sizeof(huge), 18, -EMSGSIZE,
		       PROTO_E_REQUEST_TOO_LONG);
	buf_free(&b);
}

/* Default limits, exactly at each one, through the real encoders. */
static void test_default_limits_edge(void **state)
{
	size_t vlen = PROTO_DEFAULT_MAX_VALUE + 1;
	uint8_t *big = calloc(1, vlen);
	struct proto_decoder d;
	struct buf b = { 0 };
	size_t used;

	(void)state;
	assert_non_null(big);
	assert_int_equal(proto_enc_key_val(&b, OP_SET, big,
					   PROTO_DEFAULT_MAX_KEY, big,
					   PROTO_DEFAULT_MAX_VALUE),
			 0);
	expect_ok(&deflim, b.data, b.len);
	buf_reset(&b);
	assert_int_equal(proto_enc_key_val(&b, OP_SET, big,
					   PROTO_DEFAULT_MAX_KEY + 1, big, 1),
			 0);
	proto_decoder_init(&d, &deflim, false);
	assert_int_equal(proto_decoder_feed(&d, b.data, b.len, &used),
			 -EMSGSIZE);
	assert_int_equal(d.err, PROTO_E_KEY_TOO_LONG);
	buf_reset(&b);
	assert_int_equal(proto_enc_key_val(&b, OP_SET, "k", 1, big, vlen), 0);
	proto_decoder_init(&d, &deflim, false);
	assert_int_equal(proto_decoder_feed(&d, b.data, b.len, &used),
			 -EMSGSIZE);
	assert_int_equal(d.err, PROTO_E_VALUE_TOO_LONG);
	assert_int_equal(used, 18);
	free(big);
	buf_free(&b);
}

/* Feed @hex-decoded bytes, expect exactly one request, return it parsed. */
static void decode_exact(const uint8_t *p, size_t len, bool handshake,
			 struct proto_req *req)
{
	struct proto_decoder d;
	size_t used;

	proto_decoder_init(&d, &deflim, handshake);
	assert_int_equal(proto_decoder_feed(&d, p, len, &used), 1);
	assert_int_equal(used, len);
	assert_int_equal(proto_parse(p, len, req), 0);
}

static void assert_buf_bytes(struct buf *b, const uint8_t *p, size_t len)
{
	assert_int_equal(buf_used(b), len);
	assert_memory_equal(buf_head(b), p, len);
	buf_reset(b);
}

/* @len bytes at @p are one whole reply to @op, followed by nothing. */
static void expect_reply(enum proto_op op, const uint8_t *p, size_t len)
{
	struct proto_reply_scanner r;
	size_t used;

	proto_reply_init(&r, op, 0, 0);
	assert_int_equal(proto_reply_feed(&r, p, len, &used), 1);
	assert_int_equal(used, len);
	assert_int_equal(r.len, len);
}

/* docs/protocol.md section 12, byte for byte, both directions. */
static void test_protocol_examples(void **state)
{
	static const uint8_t validate[] = { 0x00, 0xce, 0xf7, 0x85, 0x3c };
	static const uint8_t ping[] = { 0x0d, 0x39, 0x30, 0x00, 0x00 };
	static const uint8_t set[] = {
		0x01, 0x02, 0, 0, 0, 0, 0, 0, 0,    0x2f, 0x61,
		0x02, 0,    0, 0, 0, 0, 0, 0, 0x78, 0x79
	};
	static const uint8_t add[] = { 0x04, 0x05, 0,    0,    0,    0,
				       0,    0,    0,    0x69, 0x6e, 0x69,
				       0x74, 0x2f, 0x01, 0,    0,    0,
				       0,    0,    0,    0 };
	static const uint8_t wait[] = { 0x06, 0x01, 0,    0,    0,   0, 0,
					0,    0,    0x02, 0,    0,   0, 0,
					0,    0,    0,    0x2f, 0x61 };
	static const uint8_t get[] = { 0x03, 0x02, 0, 0,    0,   0,
				       0,    0,    0, 0x2f, 0x61 };
	static const uint8_t cancel[] = { 0x0c };
	static const uint8_t barrier[] = { 0x12, 0x02, 0,    0,    0,    0, 0,
					   0,    0,    0x2f, 0x62, 0x04, 0, 0,
					   0,    0,    0,    0,    0 };
	struct proto_req req;
	struct proto_slice sl;
	struct buf b = { 0 };
	const uint8_t *cur;

	(void)state;
	decode_exact(validate, sizeof(validate), true, &req);
	assert_int_equal(req.op, OP_VALIDATE);
	assert_int_equal(req.u32, PROTO_MAGIC);

	decode_exact(ping, sizeof(ping), false, &req);
	assert_int_equal(req.op, OP_PING);
	assert_int_equal(req.u32, 12345);

	decode_exact(set, sizeof(set), false, &req);
	assert_int_equal(req.op, OP_SET);
	assert_int_equal(req.key.len, 2);
	assert_memory_equal(req.key.p, "/a", 2);
	assert_ptr_equal(req.key.p, set + 9);
	assert_int_equal(req.val[0].len, 2);
	assert_memory_equal(req.val[0].p, "xy", 2);
	assert_ptr_equal(req.val[0].p, set + 19);

	decode_exact(add, sizeof(add), false, &req);
	assert_int_equal(req.op, OP_ADD);
	assert_int_equal(req.key.len, 5);
	assert_memory_equal(req.key.p, "init/", 5);
	assert_true(req.num == 1);

	decode_exact(wait, sizeof(wait), false, &req);
	assert_int_equal(req.op, OP_WAIT);
	assert_int_equal(req.count, 1);
	cur = req.list;
	assert_ptr_equal(cur, wait + 9);
	proto_next_str(&cur, &sl);
	assert_int_equal(sl.len, 2);
	assert_memory_equal(sl.p, "/a", 2);
	assert_ptr_equal(cur, wait + sizeof(wait));

	decode_exact(get, sizeof(get), false, &req);
	assert_int_equal(req.op, OP_GET);
	assert_int_equal(req.key.len, 2);
	assert_memory_equal(req.key.p, "/a", 2);

	decode_exact(cancel, sizeof(cancel), false, &req);
	assert_int_equal(req.op, OP_CANCEL_WAIT);

	decode_exact(barrier, sizeof(barrier), false, &req);
	assert_int_equal(req.op, OP_BARRIER);
	assert_int_equal(req.key.len, 2);
	assert_memory_equal(req.key.p, "/b", 2);
	assert_true(req.num == 4);

	/* The encoders produce exactly these bytes. */
	assert_int_equal(proto_enc_validate(&b), 0);
	assert_buf_bytes(&b, validate, sizeof(validate));
	assert_int_equal(proto_enc_ping(&b, 12345), 0);
	assert_buf_bytes(&b, ping, sizeof(ping));
	assert_int_equal(proto_enc_key_val(&b, OP_SET, "/a", 2, "xy", 2), 0);
	assert_buf_bytes(&b, set, sizeof(set));
	assert_int_equal(proto_enc_key_i64(&b, OP_ADD, "init/", 5, 1), 0);
	assert_buf_bytes(&b, add, sizeof(add));
	const void *k[] = { "/a" };
	size_t kl[] = { 2 };
	assert_int_equal(proto_enc_keys(&b, OP_WAIT, 1, k, kl), 0);
	assert_buf_bytes(&b, wait, sizeof(wait));
	assert_int_equal(proto_enc_key(&b, OP_GET, "/a", 2), 0);
	assert_buf_bytes(&b, get, sizeof(get));
	assert_int_equal(proto_enc_bare(&b, OP_CANCEL_WAIT), 0);
	assert_buf_bytes(&b, cancel, sizeof(cancel));
	assert_int_equal(proto_enc_key_i64(&b, OP_BARRIER, "/b", 2, 4), 0);
	assert_buf_bytes(&b, barrier, sizeof(barrier));

	/* Replies: the reply scanner takes each as exactly one. */
	static const uint8_t r_ping[] = { 0x39, 0x30, 0, 0 };
	static const uint8_t r_add[] = { 7, 0, 0, 0, 0, 0, 0, 0 };
	static const uint8_t r_get[] = { 2, 0, 0, 0, 0, 0, 0, 0, 'x', 'y' };
	static const uint8_t r_pop_empty[8] = { 0 };
	expect_reply(OP_PING, r_ping, sizeof(r_ping));
	expect_reply(OP_ADD, r_add, sizeof(r_add));
	expect_reply(OP_WAIT, (const uint8_t *)"\x00", 1);
	expect_reply(OP_GET, r_get, sizeof(r_get));
	expect_reply(OP_CANCEL_WAIT, (const uint8_t *)"\x01", 1);
	expect_reply(OP_QUEUE_POP, r_pop_empty, sizeof(r_pop_empty));
	buf_free(&b);
}

/* Encoders fail cleanly, leaving the buffer as it was. */
static void test_encoder_overflow(void **state)
{
	const void *kp[] = { "a", "b" };
	size_t kl[] = { 1, SIZE_MAX - 4 };
	struct buf b = { 0 };

	(void)state;
	assert_int_equal(proto_enc_ping(&b, 1), 0);
	assert_int_equal(proto_enc_key(&b, OP_GET, "k", SIZE_MAX - 3), -ENOMEM);
	assert_int_equal(proto_enc_key_val(&b, OP_SET, "k", 1, "v",
					   SIZE_MAX - 10),
			 -ENOMEM);
	assert_int_equal(proto_enc_compare_set(&b, "k", 1, "", 0, "v",
					       SIZE_MAX - 20),
			 -ENOMEM);
	assert_int_equal(proto_enc_key_i64(&b, OP_ADD, "k", SIZE_MAX - 8, 1),
			 -ENOMEM);
	assert_int_equal(proto_enc_keys(&b, OP_CHECK, 2, kp, kl), -ENOMEM);
	assert_int_equal(proto_enc_multi_set(&b, 2, kp, kl, kp, kl), -ENOMEM);
	assert_int_equal(buf_used(&b), 5);
	assert_int_equal(b.data[0], OP_PING);
	buf_free(&b);
}

/* Reply scanner. */

/*
 * Reply bytes as the server writes them (store.c): fixed-width fields in
 * host order, a value as its u64 length and then its bytes.
 */
static void put(struct buf *b, const void *p, size_t n)
{
	assert_int_equal(buf_append(b, p, n), 0);
}

static void put_u8(struct buf *b, uint8_t v)
{
	put(b, &v, 1);
}

static void put_u32(struct buf *b, uint32_t v)
{
	put(b, &v, 4);
}

static void put_i64(struct buf *b, int64_t v)
{
	put(b, &v, 8);
}

static void put_str(struct buf *b, const void *p, uint64_t len)
{
	put(b, &len, 8);
	put(b, p, len);
}

struct reply_case {
	enum proto_op op;
	uint64_t nkeys;
	struct buf b;
};

static void build_replies(struct reply_case *rc, size_t *n)
{
	size_t k = 0;

#define RC(o, nk) \
	(rc[k] = (struct reply_case){ .op = (o), .nkeys = (nk) }, &rc[k++].b)
	struct buf *b;

	b = RC(OP_COMPARE_SET, 0);
	put_str(b, "SENTINEL", 8);
	b = RC(OP_COMPARE_SET, 0);
	put_str(b, "", 0);
	b = RC(OP_GET, 0);
	put_str(b, "xy", 2);
	b = RC(OP_GET, 0);
	put_str(b, NULL, 0);
	b = RC(OP_ADD, 0);
	put_i64(b, -42);
	b = RC(OP_CHECK, 0);
	put_u8(b, PROTO_CHECK_NOT_READY);
	b = RC(OP_WAIT, 0);
	put_u8(b, PROTO_WAIT_STOP);
	b = RC(OP_GETNUMKEYS, 0);
	put_i64(b, 3);
	b = RC(OP_DELETE_KEY, 0);
	put_i64(b, 1);
	b = RC(OP_MULTI_GET, 3);
	put_str(b, "one", 3);
	put_str(b, "", 0);
	put_str(b, "three", 5);
	b = RC(OP_MULTI_GET, 1);
	put_str(b, "", 0);
	b = RC(OP_CANCEL_WAIT, 0);
	put_u8(b, PROTO_WAIT_CANCELED);
	b = RC(OP_PING, 0);
	put_u32(b, 12345);
	b = RC(OP_QUEUE_POP, 0);
	put_i64(b, 0);
	b = RC(OP_QUEUE_POP, 0);
	put_i64(b, -1);
	b = RC(OP_QUEUE_POP, 0);
	put_i64(b, 3);
	put_str(b, "job", 3);
	b = RC(OP_QUEUE_POP, 0);
	put_i64(b, 1);
	put_str(b, "", 0);
	b = RC(OP_QUEUE_LEN, 0);
	put_i64(b, 9);
	b = RC(OP_LIST_KEYS, 0);
	put_i64(b, 0);
	b = RC(OP_LIST_KEYS, 0);
	put_i64(b, 3);
	put_str(b, "/a", 2);
	put_str(b, "", 0);
	put_str(b, "init/", 5);
	b = RC(OP_BARRIER, 0);
	put_u8(b, PROTO_WAIT_STOP);
#undef RC
	*n = k;
}

/* Hand-computed sizes of the replies above, in order. */
static const size_t reply_sizes[] = {
	16, 8, 10, 8, 8, 1, 1, 8, 8, 32, 8, 1, 4, 8, 8, 19, 16, 8, 8, 39, 1,
};

static void test_reply_scanner(void **state)
{
	struct reply_case rc[32];
	size_t n;

	(void)state;
	build_replies(rc, &n);
	assert_int_equal(n, sizeof(reply_sizes) / sizeof(reply_sizes[0]));
	for (size_t k = 0; k < n; k++) {
		struct proto_reply_scanner r;
		const uint8_t *p = rc[k].b.data;
		size_t len = buf_used(&rc[k].b), used = 999;

		assert_int_equal(len, reply_sizes[k]);
		/* Whole, with a following reply's bytes after it. */
		assert_int_equal(buf_append(&rc[k].b, "\x01\x02\x03", 3), 0);
		p = rc[k].b.data;
		proto_reply_init(&r, rc[k].op, rc[k].nkeys, 0);
		assert_int_equal(proto_reply_feed(&r, p, len + 3, &used), 1);
		assert_int_equal(used, len);
		assert_int_equal(r.len, len);

		/* Split at every offset. */
		for (size_t cut = 0; cut < len; cut++) {
			proto_reply_init(&r, rc[k].op, rc[k].nkeys, 0);
			assert_int_equal(proto_reply_feed(&r, p, cut, &used),
					 0);
			assert_int_equal(used, cut);
			assert_int_equal(proto_reply_feed(&r, p + cut,
							  len - cut + 3, &used),
					 1);
			assert_int_equal(used, len - cut);
			assert_int_equal(r.len, len);
		}

		/* One byte at a time. */
		proto_reply_init(&r, rc[k].op, rc[k].nkeys, 0);
		for (size_t i = 0; i < len; i++)
			assert_int_equal(proto_reply_feed(&r, p + i, 1, &used),
					 i + 1 == len ? 1 : 0);

		/* A cap exactly at the largest length field passes. */
		proto_reply_init(&r, rc[k].op, rc[k].nkeys, 5);
		assert_int_equal(proto_reply_feed(&r, p, len, &used),
				 rc[k].op == OP_COMPARE_SET && len == 16
					 ? -EMSGSIZE
					 : 1);
		buf_free(&rc[k].b);
	}
}

static void test_reply_edges(void **state)
{
	struct proto_reply_scanner r;
	struct buf b = { 0 };
	size_t used;

	(void)state;
	/* MULTI_GET of no keys has an empty reply. */
	proto_reply_init(&r, OP_MULTI_GET, 0, 0);
	assert_int_equal(
		proto_reply_feed(&r, (const uint8_t *)"\x00", 1, &used), 1);
	assert_int_equal(used, 0);
	assert_int_equal(r.len, 0);

	/* Fixed-size replies end on their last byte even when n is 0. */
	proto_reply_init(&r, OP_CHECK, 0, 0);
	assert_int_equal(proto_reply_feed(&r, NULL, 0, &used), 0);
	assert_int_equal(used, 0);

	/* Ops without a reply, and opcodes outside the table. */
	static const enum proto_op none[] = { OP_VALIDATE, OP_SET, OP_APPEND,
					      OP_MULTI_SET, OP_QUEUE_PUSH };
	for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		proto_reply_init(&r, none[i], 0, 0);
		assert_int_equal(proto_reply_feed(&r, (const uint8_t *)"\0", 1,
						  &used),
				 -EPROTO);
	}
	proto_reply_init(&r, (enum proto_op)19, 0, 0);
	assert_int_equal(proto_reply_feed(&r, (const uint8_t *)"\0", 1, &used),
			 -EPROTO);

	/* A GET value one over the cap is refused after its length. */
	put_str(&b, "0123456789a", 11);
	proto_reply_init(&r, OP_GET, 0, 11);
	assert_int_equal(proto_reply_feed(&r, b.data, b.len, &used), 1);
	proto_reply_init(&r, OP_GET, 0, 10);
	assert_int_equal(proto_reply_feed(&r, b.data, b.len, &used), -EMSGSIZE);
	assert_int_equal(used, 8);
	/* Also in the middle of a MULTI_GET and of a QUEUE_POP. */
	buf_reset(&b);
	put_str(&b, "ok", 2);
	put_str(&b, "0123456789a", 11);
	proto_reply_init(&r, OP_MULTI_GET, 2, 10);
	assert_int_equal(proto_reply_feed(&r, b.data, b.len, &used), -EMSGSIZE);
	assert_int_equal(used, 18);
	buf_reset(&b);
	put_i64(&b, 1);
	put_str(&b, "0123456789a", 11);
	proto_reply_init(&r, OP_QUEUE_POP, 0, 10);
	assert_int_equal(proto_reply_feed(&r, b.data, b.len, &used), -EMSGSIZE);
	assert_int_equal(used, 16);

	/* LIST_KEYS: count over the cap, negative count. */
	buf_reset(&b);
	put_i64(&b, 11);
	proto_reply_init(&r, OP_LIST_KEYS, 0, 10);
	assert_int_equal(proto_reply_feed(&r, b.data, b.len, &used), -EMSGSIZE);
	proto_reply_init(&r, OP_LIST_KEYS, 0, 11);
	assert_int_equal(proto_reply_feed(&r, b.data, b.len, &used), 0);
	assert_int_equal(used, 8);
	buf_reset(&b);
	put_i64(&b, -1);
	proto_reply_init(&r, OP_LIST_KEYS, 0, 0);
	assert_int_equal(proto_reply_feed(&r, b.data, b.len, &used), -EPROTO);

	/* The "00 01" WAIT/CANCEL_WAIT race is two one-byte replies. */
	proto_reply_init(&r, OP_WAIT, 0, 0);
	assert_int_equal(
		proto_reply_feed(&r, (const uint8_t *)"\x00\x01", 2, &used), 1);
	assert_int_equal(used, 1);
	proto_reply_init(&r, OP_CANCEL_WAIT, 0, 0);
	assert_int_equal(
		proto_reply_feed(&r, (const uint8_t *)"\x01", 1, &used), 1);
	assert_int_equal(used, 1);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_limits_default),
		cmocka_unit_test(test_whole),
		cmocka_unit_test(test_split_every_offset),
		cmocka_unit_test(test_byte_at_a_time),
		cmocka_unit_test(test_coalesced),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_limit_key),
		cmocka_unit_test(test_limit_value),
		cmocka_unit_test(test_limit_count),
		cmocka_unit_test(test_multi_set_negative),
		cmocka_unit_test(test_limit_request),
		cmocka_unit_test(test_default_limits_edge),
		cmocka_unit_test(test_protocol_examples),
		cmocka_unit_test(test_encoder_overflow),
		cmocka_unit_test(test_reply_scanner),
		cmocka_unit_test(test_reply_edges),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
