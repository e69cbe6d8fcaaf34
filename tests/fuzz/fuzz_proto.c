/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proto.c - libFuzzer harness for the TCPStore codec (common/proto.c).
 *
 * Input layout: one header byte, then up to seven chunk-size bytes, then the
 * byte stream under test.
 *   header bit 0      start the request decoders in handshake mode
 *   header bits 1-3   how many chunk-size bytes follow (0: one-byte chunks)
 *   header bits 4-7   MULTI_GET key count for the reply scanner
 * A chunk size of 0 means "the rest of the stream".
 *
 * The stream goes through three request decoders:
 *   whole  - default limits, fed the whole remainder each time and parsed
 *            in place (the server's zero-copy path);
 *   chunk  - default limits, fed in the chunk sizes, requests gathered in a
 *            spill buffer; it must find exactly the same request boundaries
 *            and the same final verdict as "whole";
 *   small  - tiny limits, chunked, so every limit path is reachable; the
 *            requests it accepts must be a prefix of what "whole" accepts.
 * Every complete request must parse (and its last byte must be needed),
 * an incomplete tail must not parse, and walking a list with proto_next_str
 * must stay inside its request. The stream is also fed, whole and
 * chunked, to a reply scanner for every opcode; both must agree.
 *
 * Build (fuzzer):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon \
 *     common/proto.c common/buf.c tests/fuzz/fuzz_proto.c -o fuzz_proto
 * Build the seed-corpus writer with -DRS_FUZZ_SEED_MAIN (no -fsanitize=
 * fuzzer) and run it with a directory argument.
 */
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                               \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #x);                                 \
			abort();                                               \
		}                                                              \
	} while (0)

/* Small enough that random bytes hit every limit. */
static const struct proto_limits small_lim = {
	.max_key = 16,
	.max_value = 32,
	.max_keys = 4,
	.max_request = 48, /* below the largest SET the other limits allow */
};

#define MAX_BOUNDS 4096

/* What one decoder made of the stream. */
struct verdict {
	size_t nreq;
	size_t ends[MAX_BOUNDS]; /* stream offset one past each request */
	int rc;                  /* 0: ran out of input; else the error */
	enum proto_err err;
};

struct schedule {
	const uint8_t *sizes;
	size_t n;
	size_t turn;
};

static size_t next_chunk(struct schedule *s, size_t left)
{
	size_t c = 1;

	if (s->n) {
		c = s->sizes[s->turn++ % s->n];
		if (c == 0)
			c = left;
	}
	return c < left ? c : left;
}

static bool in_req(const struct proto_req *req, const uint8_t *p,
		   const struct proto_slice *s)
{
	if (!s->p)
		return s->len == 0;
	return s->p >= p && s->p <= req->end &&
	       s->len <= (uint64_t)(req->end - s->p);
}

/* Parse one complete request of @len bytes and walk everything in it. */
static void check_request(const uint8_t *p, size_t len)
{
	struct proto_req req;

	/* The request ends exactly where the decoder said. */
	CHECK(proto_parse(p, len - 1, &req) == -EPROTO);
	CHECK(proto_parse(p, len, &req) == 0);
	{
		/* The server's parse of framed bytes gives the same. */
		struct proto_req fr;

		CHECK(proto_parse_framed(p, len, &fr) == 0);
		CHECK(memcmp(&fr, &req, sizeof(fr)) == 0);
	}
	CHECK(req.op < OP__COUNT);
	CHECK(req.end == p + len);
	CHECK(in_req(&req, p, &req.key));
	CHECK(in_req(&req, p, &req.val[0]));
	CHECK(in_req(&req, p, &req.val[1]));
	if (req.op == OP_VALIDATE)
		CHECK(req.u32 == PROTO_MAGIC);
	if (!req.list)
		return;

	/* Each item is one string, or two for MULTI_SET. */
	uint64_t nstr = req.count * (req.op == OP_MULTI_SET ? 2 : 1);
	const uint8_t *cur = req.list;

	CHECK(cur >= p && cur <= req.end);
	for (uint64_t k = 0; k < nstr; k++) {
		struct proto_slice s;

		CHECK(req.end - cur >= 8);
		proto_next_str(&cur, &s);
		CHECK(s.p >= p && s.len <= (uint64_t)(req.end - s.p));
		CHECK(cur > req.list && cur <= req.end);
	}
	CHECK(cur == req.end);
}

static void add_end(struct verdict *v, size_t end)
{
	if (v->nreq < MAX_BOUNDS)
		v->ends[v->nreq] = end;
	v->nreq++;
}

/* Feed the remainder of the stream each time; parse in place. */
static void run_whole(const uint8_t *p, size_t n, bool hs,
		      const struct proto_limits *lim, struct verdict *v)
{
	struct proto_decoder d;
	size_t off = 0;

	memset(v, 0, sizeof(*v));
	proto_decoder_init(&d, lim, hs);
	while (off < n) {
		size_t used = 0;
		int rc = proto_decoder_feed(&d, p + off, n - off, &used);

		CHECK(used <= n - off);
		if (rc < 0) {
			CHECK(rc == -EPROTO || rc == -EMSGSIZE);
			CHECK(d.err != PROTO_E_NONE);
			CHECK((rc == -EMSGSIZE) ==
			      (d.err >= PROTO_E_KEY_TOO_LONG));
			v->rc = rc;
			v->err = d.err;
			return;
		}
		/* A partial integer may sit up to 7 bytes past the limit. */
		CHECK(d.req_len <= lim->max_request + 7);
		if (rc == 0) {
			struct proto_req req;

			/* The parser agrees that nothing complete is here. */
			CHECK(used == n - off);
			CHECK(proto_parse(p + off, n - off, &req) == -EPROTO);
			return;
		}
		CHECK(d.req_len <= lim->max_request);
		CHECK(rc == 1);
		CHECK(d.req_len == used);
		check_request(p + off, used);
		if (off + used < n) {
			struct proto_req req;

			/* One byte more is not one request either. */
			CHECK(proto_parse(p + off, used + 1, &req) == -EPROTO);
		}
		off += used;
		add_end(v, off);
		proto_decoder_next(&d);
	}
}

/* Feed in scheduled chunks, gathering split requests in a spill buffer. */
static void run_chunked(const uint8_t *p, size_t n, bool hs,
			const struct proto_limits *lim, struct schedule *sch,
			struct verdict *v)
{
	struct proto_decoder d;
	struct buf spill = { 0 };
	size_t off = 0;

	memset(v, 0, sizeof(*v));
	sch->turn = 0;
	proto_decoder_init(&d, lim, hs);
	while (off < n) {
		size_t c = next_chunk(sch, n - off);
		size_t pos = 0;

		while (pos < c) {
			size_t used = 0;
			int rc = proto_decoder_feed(&d, p + off + pos, c - pos,
						    &used);

			CHECK(used <= c - pos);
			if (rc < 0) {
				v->rc = rc;
				v->err = d.err;
				goto out;
			}
			CHECK(buf_append(&spill, p + off + pos, used) == 0);
			pos += used;
			CHECK(buf_used(&spill) == d.req_len);
			CHECK(d.req_len <= lim->max_request + 7);
			if (rc == 0) {
				CHECK(pos == c);
				break;
			}
			CHECK(d.req_len <= lim->max_request);
			check_request(buf_head(&spill), buf_used(&spill));
			add_end(v, off + pos);
			buf_reset(&spill);
			proto_decoder_next(&d);
		}
		off += c;
	}
out:
	buf_free(&spill);
}

static void run_replies(const uint8_t *p, size_t n, uint64_t nkeys,
			struct schedule *sch)
{
	for (unsigned op = 0; op <= OP__COUNT; op++) {
		struct proto_reply_scanner a, b;
		size_t used_a = 0, off = 0;
		int rc_a, rc_b = 0;

		proto_reply_init(&a, (enum proto_op)op, nkeys, 64);
		rc_a = proto_reply_feed(&a, p, n, &used_a);
		CHECK(used_a <= n);
		if (rc_a == 1)
			CHECK(a.len == used_a);

		sch->turn = 0;
		proto_reply_init(&b, (enum proto_op)op, nkeys, 64);
		do {
			size_t c = next_chunk(sch, n - off), used = 0;

			rc_b = proto_reply_feed(&b, p + off, c, &used);
			CHECK(used <= c);
			off += used;
			if (rc_b != 0)
				break;
			CHECK(used == c);
		} while (off < n);
		CHECK(rc_a == rc_b);
		if (rc_a == 1)
			CHECK(off == used_a);
		else if (rc_a == 0)
			CHECK(off == n && used_a == n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct verdict whole, chunk, small;
	struct proto_limits def;
	struct schedule sch = { 0 };

	if (size < 1)
		return 0;
	bool hs = data[0] & 1;
	size_t nsched = (data[0] >> 1) & 7;
	uint64_t nkeys = data[0] >> 4;
	if (size < 1 + nsched)
		return 0;
	sch.sizes = data + 1;
	sch.n = nsched;
	const uint8_t *p = data + 1 + nsched;
	size_t n = size - 1 - nsched;

	proto_limits_default(&def);
	run_whole(p, n, hs, &def, &whole);
	run_chunked(p, n, hs, &def, &sch, &chunk);
	run_chunked(p, n, hs, &small_lim, &sch, &small);

	/* Chunking changes nothing. */
	CHECK(whole.nreq == chunk.nreq);
	CHECK(whole.rc == chunk.rc && whole.err == chunk.err);
	for (size_t k = 0; k < whole.nreq && k < MAX_BOUNDS; k++)
		CHECK(whole.ends[k] == chunk.ends[k]);
	/* Tighter limits accept a prefix of the same requests. */
	CHECK(small.nreq <= whole.nreq);
	for (size_t k = 0; k < small.nreq && k < MAX_BOUNDS; k++)
		CHECK(small.ends[k] == whole.ends[k]);
	if (small.rc == 0)
		CHECK(small.nreq == whole.nreq);

	run_replies(p, n, nkeys, &sch);
	return 0;
}

#ifdef RS_FUZZ_SEED_MAIN
/*
 * Seed corpus: header byte, no schedule (or a short one), then realistic
 * request streams built with the encoders, and replies.
 */
static int write_seed(const char *dir, int idx, uint8_t hdr,
		      const uint8_t *sched, size_t nsched, const struct buf *b)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/seed-%03d", dir, idx);
	f = fopen(path, "wb");
	if (!f)
		return -errno;
	fputc(hdr | (uint8_t)(nsched << 1), f);
	fwrite(sched, 1, nsched, f);
	fwrite(buf_head(b), 1, buf_used(b), f);
	return fclose(f) ? -errno : 0;
}

/* Reply fields as the server writes them (store.c): an integer of @n
 * bytes in host order, or a u64 length and then the bytes. */
static void put_int(struct buf *b, uint64_t v, size_t n)
{
	buf_append(b, &v, n);
}

static void put_str(struct buf *b, const char *p, uint64_t n)
{
	put_int(b, n, 8);
	buf_append(b, p, n);
}

static void all_requests(struct buf *b)
{
	const void *k[] = { "/a", "", "/ccc" };
	const size_t kl[] = { 2, 0, 4 };
	const void *v[] = { "1", "two", "" };
	const size_t vl[] = { 1, 3, 0 };

	proto_enc_key_val(b, OP_SET, "/a", 2, "xy", 2);
	proto_enc_compare_set(b, "/r", 2, "", 0, "S", 1);
	proto_enc_key(b, OP_GET, "/a", 2);
	proto_enc_key_i64(b, OP_ADD, "init/", 5, 1);
	proto_enc_keys(b, OP_CHECK, 3, k, kl);
	proto_enc_keys(b, OP_WAIT, 1, k, kl);
	proto_enc_bare(b, OP_GETNUMKEYS);
	proto_enc_key(b, OP_DELETE_KEY, "/a", 2);
	proto_enc_key_val(b, OP_APPEND, "/a", 2, "", 0);
	proto_enc_keys(b, OP_MULTI_GET, 0, k, kl);
	proto_enc_multi_set(b, 3, k, kl, v, vl);
	proto_enc_bare(b, OP_CANCEL_WAIT);
	proto_enc_ping(b, 12345);
	proto_enc_key_val(b, OP_QUEUE_PUSH, "/q", 2, "job", 3);
	proto_enc_key(b, OP_QUEUE_POP, "/q", 2);
	proto_enc_key(b, OP_QUEUE_LEN, "/q", 2);
	proto_enc_bare(b, OP_LIST_KEYS);
	proto_enc_key_i64(b, OP_BARRIER, "/b", 2, 4);
}

int main(int argc, char **argv)
{
	static const uint8_t sched[] = { 3, 1, 0, 9 };
	struct buf b = { 0 };
	int idx = 0, rc = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
		return 2;
	}
	/* The handshake then every opcode, whole and chunked. */
	proto_enc_validate(&b);
	all_requests(&b);
	rc |= write_seed(argv[1], idx++, 1, NULL, 0, &b);
	rc |= write_seed(argv[1], idx++, 1, sched, sizeof(sched), &b);
	/* Without the handshake, and a VALIDATE where it is not allowed. */
	buf_reset(&b);
	all_requests(&b);
	proto_enc_validate(&b);
	rc |= write_seed(argv[1], idx++, 0, sched, 2, &b);

	/* Replies of each shape. */
	buf_reset(&b);
	put_int(&b, 3, 8);
	put_str(&b, "/a", 2);
	put_str(&b, "", 0);
	put_str(&b, "init/", 5);
	rc |= write_seed(argv[1], idx++, 3 << 4, NULL, 0, &b);
	buf_reset(&b);
	put_int(&b, 1, 8);
	put_str(&b, "job", 3);
	put_int(&b, 0, 1);
	put_int(&b, 12345, 4);
	rc |= write_seed(argv[1], idx++, 2 << 4, sched, 1, &b);
	buf_free(&b);
	return rc ? 1 : 0;
}
#endif
