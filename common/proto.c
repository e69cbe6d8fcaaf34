/* SPDX-License-Identifier: MIT */
/*
 * proto.c - the TCPStore codec: request decoder and parser, reply scanner,
 * and the request encoders (see proto.h and docs/protocol.md).
 *
 * Each opcode's request body is described by a short "field program": a list
 * of fixed-width integers, length-prefixed strings and at most one counted,
 * repeated group, ending in F_END. The decoder, the parser and the reply
 * scanner are small interpreters over such programs, so the layout of every
 * opcode lives in exactly one table and adding an opcode is one line.
 *
 * The decoder's state is only a cursor (program step, bytes of a split
 * integer, items left in the group, payload bytes still to skip). It never
 * copies payload and never allocates, so it can run on every received byte.
 * Every length and count is checked against the limits the moment its last
 * byte arrives, before any of the payload it announces is consumed.
 *
 * Nothing here is shared between threads; each decoder belongs to one
 * connection and each scanner to one client.
 */
#include "proto.h"

#include <errno.h>
#include <string.h>

#include "compiler.h"

/*
 * Field kinds. U32/I64 are opaque fixed-width integers; KEY and VAL are a
 * u64 length plus that many bytes (they differ only in their limit); COUNT
 * is a u64 item count that opens a repeated group of the program's gsz
 * fields, which LOOP closes.
 */
enum field {
	F_END,
	F_U32,
	F_I64,
	F_KEY,
	F_VAL,
	F_COUNT,
	F_LOOP,
};

/* At most COUNT + KEY + VAL + LOOP + END, or KEY + VAL + VAL + END. */
#define PROG_MAX 5

struct prog {
	uint8_t f[PROG_MAX];
	uint8_t gsz; /* fields in the repeated group (0: no group) */
};

#define P(...)                              \
	{                                   \
		.f = { __VA_ARGS__, F_END } \
	}
#define P_LIST(...)                                             \
	{                                                       \
		.f = { F_COUNT, __VA_ARGS__, F_LOOP, F_END },   \
		.gsz = sizeof((const uint8_t[]){ __VA_ARGS__ }) \
	}

/* Request bodies, after the opcode byte (docs/protocol.md section 2). */
static const struct prog req_prog[OP__COUNT] = {
	[OP_VALIDATE] = P(F_U32),
	[OP_SET] = P(F_KEY, F_VAL),
	[OP_COMPARE_SET] = P(F_KEY, F_VAL, F_VAL),
	[OP_GET] = P(F_KEY),
	[OP_ADD] = P(F_KEY, F_I64),
	[OP_CHECK] = P_LIST(F_KEY),
	[OP_WAIT] = P_LIST(F_KEY),
	[OP_GETNUMKEYS] = P(F_END),
	[OP_DELETE_KEY] = P(F_KEY),
	[OP_APPEND] = P(F_KEY, F_VAL),
	[OP_MULTI_GET] = P_LIST(F_KEY),
	[OP_MULTI_SET] = P_LIST(F_KEY, F_VAL),
	[OP_CANCEL_WAIT] = P(F_END),
	[OP_PING] = P(F_U32),
	[OP_QUEUE_PUSH] = P(F_KEY, F_VAL),
	[OP_QUEUE_POP] = P(F_KEY),
	[OP_QUEUE_LEN] = P(F_KEY),
	[OP_LIST_KEYS] = P(F_END),
	[OP_BARRIER] = P(F_KEY, F_I64),
};

#undef P
#undef P_LIST

static const char *const op_names[OP__COUNT] = {
#define PROTO_X_NAME(name, val) [val] = #name,
	PROTO_OPS(PROTO_X_NAME)
#undef PROTO_X_NAME
};

const char *proto_op_name(unsigned op)
{
	return op < OP__COUNT ? op_names[op] : "?";
}

/* Lower-case identifiers, spelled out so they need no run-time buffer. */
static const char *const err_names[PROTO_E__COUNT] = {
	[PROTO_E_NONE] = "none",
	[PROTO_E_NOT_VALIDATED] = "not_validated",
	[PROTO_E_BAD_MAGIC] = "bad_magic",
	[PROTO_E_UNKNOWN_OP] = "unknown_op",
	[PROTO_E_KEY_TOO_LONG] = "key_too_long",
	[PROTO_E_VALUE_TOO_LONG] = "value_too_long",
	[PROTO_E_TOO_MANY_KEYS] = "too_many_keys",
	[PROTO_E_REQUEST_TOO_LONG] = "request_too_long",
};

static const char *const err_texts[PROTO_E__COUNT] = {
#define PROTO_X_TEXT(name, text) [PROTO_E_##name] = text,
	PROTO_ERRS(PROTO_X_TEXT)
#undef PROTO_X_TEXT
};

const char *proto_err_name(enum proto_err e)
{
	return (unsigned)e < PROTO_E__COUNT ? err_names[e] : "?";
}

const char *proto_err_text(enum proto_err e)
{
	return (unsigned)e < PROTO_E__COUNT ? err_texts[e] : "unknown error";
}

void proto_limits_default(struct proto_limits *lim)
{
	lim->max_key = PROTO_DEFAULT_MAX_KEY;
	lim->max_value = PROTO_DEFAULT_MAX_VALUE;
	lim->max_keys = PROTO_DEFAULT_MAX_KEYS;
	lim->max_request = PROTO_DEFAULT_MAX_REQUEST;
}

/*
 * Gather a @width-byte little-endian integer from p[*i..n), continuing a
 * partial one held in ibuf/ilen. Returns true with *v set when it is
 * complete; false when the bytes ran out (they are then all in ibuf).
 */
static inline bool gather(uint8_t *ibuf, uint8_t *ilen, unsigned width,
			  const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
	uint64_t x = 0;

	if (likely(*ilen == 0 && n - *i >= width)) {
		memcpy(&x, p + *i, width);
		*i += width;
		*v = x;
		return true;
	}
	if (*i == n)
		return false; /* also keeps a NULL, empty feed untouched */
	size_t take = width - *ilen;
	if (take > n - *i)
		take = n - *i;
	memcpy(ibuf + *ilen, p + *i, take);
	*ilen += (uint8_t)take;
	*i += take;
	if (*ilen < width)
		return false;
	memcpy(&x, ibuf, width);
	*ilen = 0;
	*v = x;
	return true;
}

void proto_decoder_init(struct proto_decoder *d, const struct proto_limits *lim,
			bool handshake)
{
	memset(d, 0, sizeof(*d));
	d->lim = lim;
	d->handshake = handshake;
}

void proto_decoder_next(struct proto_decoder *d)
{
	d->in_req = false;
	d->step = 0;
	d->ilen = 0;
	d->remaining = 0;
	d->skip = 0;
	d->req_len = 0;
	d->err = PROTO_E_NONE;
}

_Static_assert(PROTO_E_KEY_TOO_LONG > PROTO_E_UNKNOWN_OP &&
		       PROTO_E_UNKNOWN_OP > PROTO_E_BAD_MAGIC &&
		       PROTO_E_BAD_MAGIC > PROTO_E_NOT_VALIDATED,
	       "malformed-stream errors come before the limit errors");

/*
 * Record why the stream is rejected. Malformed streams are -EPROTO; streams
 * that are well formed but over a limit are -EMSGSIZE.
 */
static int fail(struct proto_decoder *d, enum proto_err e, size_t i,
		size_t *used)
{
	d->err = e;
	*used = i;
	return e >= PROTO_E_KEY_TOO_LONG ? -EMSGSIZE : -EPROTO;
}

/*
 * A run of list items (CHECK, WAIT, MULTI_GET: one key each; MULTI_SET: a
 * key and a value), walked without the field interpreter: consume every
 * item that is wholly in p[i..n) and within the limits, except the list's
 * last (whose LOOP step ends the group). An item this loop declines is left
 * to the interpreter, which fails on it or waits for its bytes exactly as
 * it would have without this loop. Returns the new offset.
 */
static size_t item_run(struct proto_decoder *d, const uint8_t *p, size_t n,
		       size_t i, bool with_value)
{
	const struct proto_limits *lim = d->lim;
	/* In locals: stores through @p's bytes could alias d's fields, so
	 * the compiler would load and store them every item. */
	uint64_t remaining = d->remaining, req_len = d->req_len;
	const uint64_t max_key = lim->max_key, max_value = lim->max_value;
	const uint64_t max_request = lim->max_request;

	while (remaining > 1) {
		size_t j = i, len = 0;
		uint64_t k, v = 0;

		if (n - j < sizeof(k))
			break;
		memcpy(&k, p + j, sizeof(k));
		if (k > max_key || k > n - j - sizeof(k))
			break;
		j += sizeof(k) + k;
		if (with_value) {
			if (n - j < sizeof(v))
				break;
			memcpy(&v, p + j, sizeof(v));
			if (v > max_value || v > n - j - sizeof(v))
				break;
			j += sizeof(v) + v;
		}
		len = j - i;
		if (req_len + len > max_request)
			break;
		i = j;
		req_len += len;
		remaining--;
	}
	d->remaining = remaining;
	d->req_len = req_len;
	return i;
}

int proto_decoder_feed(struct proto_decoder *d, const uint8_t *p, size_t n,
		       size_t *used)
{
	const struct proto_limits *lim = d->lim;
	size_t i = 0;

	if (!d->in_req) {
		if (n == 0) {
			*used = 0;
			return 0;
		}
		uint8_t op = p[i++];
		d->in_req = true;
		d->req_len = 1;
		d->op = op;
		/* Judge the opcode before reading any more of the stream. */
		if (unlikely(d->handshake)) {
			if (op != OP_VALIDATE)
				return fail(d, PROTO_E_NOT_VALIDATED, i, used);
		} else if (unlikely(op == OP_VALIDATE || op >= OP__COUNT)) {
			return fail(d, PROTO_E_UNKNOWN_OP, i, used);
		}
	}

	const struct prog *pg = &req_prog[d->op];
	for (;;) {
		if (d->skip) {
			size_t take = n - i;
			if (take > d->skip)
				take = (size_t)d->skip;
			i += take;
			d->skip -= take;
			d->req_len += take;
			if (d->skip) {
				*used = i;
				return 0;
			}
		}

		uint8_t f = pg->f[d->step];
		if (f == F_KEY && d->remaining > 1 && d->ilen == 0 &&
		    (pg->gsz == 1 ||
		     (pg->gsz == 2 && pg->f[d->step + 1] == F_VAL)))
			i = item_run(d, p, n, i, pg->gsz == 2);
		if (f == F_END) {
			if (d->op == OP_VALIDATE)
				d->handshake = false;
			*used = i;
			return 1;
		}
		if (f == F_LOOP) {
			if (--d->remaining)
				d->step -= pg->gsz;
			else
				d->step++;
			continue;
		}

		uint64_t v;
		size_t i0 = i;
		bool done = gather(d->ibuf, &d->ilen, f == F_U32 ? 4 : 8, p, n,
				   &i, &v);
		d->req_len += i - i0;
		if (!done) {
			*used = i;
			return 0;
		}
		d->step++;

		switch (f) {
		case F_U32:
			if (d->op == OP_VALIDATE && v != PROTO_MAGIC)
				return fail(d, PROTO_E_BAD_MAGIC, i, used);
			break;
		case F_KEY:
			if (v > lim->max_key)
				return fail(d, PROTO_E_KEY_TOO_LONG, i, used);
			d->skip = v;
			break;
		case F_VAL:
			if (v > lim->max_value)
				return fail(d, PROTO_E_VALUE_TOO_LONG, i, used);
			d->skip = v;
			break;
		case F_COUNT:
			/* A negative MULTI_SET count has its top bit set. */
			if (v > lim->max_keys || (v >> 63))
				return fail(d, PROTO_E_TOO_MANY_KEYS, i, used);
			d->remaining = v;
			/* An empty list: step past the group and its LOOP. */
			if (v == 0)
				d->step += pg->gsz + 1;
			break;
		default: /* F_I64: any value */
			break;
		}
		/* req_len grows by at most 8 per field: it cannot wrap. */
		if (d->req_len > lim->max_request ||
		    d->skip > lim->max_request - d->req_len)
			return fail(d, PROTO_E_REQUEST_TOO_LONG, i, used);
	}
}

/* A bounds-checked reader over one complete request, for proto_parse. */
struct rd {
	const uint8_t *p;
	const uint8_t *end;
};

static bool rd_int(struct rd *r, unsigned width, uint64_t *v)
{
	uint64_t x = 0;

	if ((size_t)(r->end - r->p) < width)
		return false;
	memcpy(&x, r->p, width);
	r->p += width;
	*v = x;
	return true;
}

static bool rd_str(struct rd *r, struct proto_slice *s)
{
	uint64_t len;

	if (!rd_int(r, 8, &len) || len > (uint64_t)(r->end - r->p))
		return false;
	s->p = r->p;
	s->len = len;
	r->p += len;
	return true;
}

static int parse(const uint8_t *p, size_t len, struct proto_req *req,
		 bool framed)
{
	struct rd r = { p, p + len };
	unsigned nval = 0;
	uint64_t left = 0;

	memset(req, 0, sizeof(*req));
	if (len == 0 || p[0] >= OP__COUNT)
		return -EPROTO;
	req->op = p[0];
	req->end = r.end;
	r.p++;

	const struct prog *pg = &req_prog[req->op];
	for (unsigned step = 0;;) {
		uint8_t f = pg->f[step++];
		struct proto_slice s;
		uint64_t v;

		switch (f) {
		case F_END:
			return r.p == r.end ? 0 : -EPROTO;
		case F_U32:
			if (!rd_int(&r, 4, &v))
				return -EPROTO;
			req->u32 = (uint32_t)v;
			break;
		case F_I64:
			if (!rd_int(&r, 8, &v))
				return -EPROTO;
			req->num = (int64_t)v;
			break;
		case F_KEY:
		case F_VAL:
			if (!rd_str(&r, &s))
				return -EPROTO;
			/* Fields inside the group stay encoded in the list. A
			 * group of one key is checked here to its end; so is
			 * a group of a key and a value, from its key. */
			if (req->list && f == F_KEY &&
			    (pg->gsz == 1 || pg->f[step] == F_VAL)) {
				bool kv = pg->gsz == 2;

				if (kv && !rd_str(&r, &s))
					return -EPROTO;
				for (; left > 1; left--)
					if (!rd_str(&r, &s) ||
					    (kv && !rd_str(&r, &s)))
						return -EPROTO;
				if (kv)
					step++; /* past the value just read */
				break;
			}
			if (req->list)
				break;
			if (f == F_KEY)
				req->key = s;
			else
				req->val[nval++] = s;
			break;
		case F_COUNT:
			if (!rd_int(&r, 8, &v))
				return -EPROTO;
			req->count = v;
			req->list = r.p;
			/* A list is the last part of its request: framed by
			 * the decoder, it fills the rest exactly. */
			if (framed)
				return 0;
			left = v;
			if (v == 0)
				step += pg->gsz + 1;
			break;
		case F_LOOP:
			/* Items take >= 8 bytes each: the walk is bounded. */
			if (--left)
				step -= pg->gsz + 1;
			break;
		}
	}
}

int proto_parse(const uint8_t *p, size_t len, struct proto_req *req)
{
	return parse(p, len, req, false);
}

int proto_parse_framed(const uint8_t *p, size_t len, struct proto_req *req)
{
	return parse(p, len, req, true);
}

/*
 * Request encoders reserve the whole request first and then copy into the
 * reserved tail, so a failure never leaves half a request in the buffer.
 */
static inline void put_raw(struct buf *b, const void *p, size_t n)
{
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

static inline void put_str(struct buf *b, const void *p, size_t n)
{
	uint64_t len = n;

	put_raw(b, &len, 8);
	put_raw(b, p, n);
}

/* Add @n to *total; false on size_t overflow. */
static inline bool add_len(size_t *total, size_t n)
{
	if (n > SIZE_MAX - *total)
		return false;
	*total += n;
	return true;
}

static int reserve_req(struct buf *b, size_t total)
{
	return buf_reserve(b, total) ? -ENOMEM : 0;
}

int proto_enc_validate(struct buf *b)
{
	uint8_t m[5] = { OP_VALIDATE };
	uint32_t magic = PROTO_MAGIC;

	memcpy(m + 1, &magic, 4);
	return buf_append(b, m, sizeof(m));
}

int proto_enc_ping(struct buf *b, uint32_t nonce)
{
	uint8_t m[5] = { OP_PING };

	memcpy(m + 1, &nonce, 4);
	return buf_append(b, m, sizeof(m));
}

int proto_enc_bare(struct buf *b, enum proto_op op)
{
	uint8_t o = op;

	return buf_append(b, &o, 1);
}

int proto_enc_key(struct buf *b, enum proto_op op, const void *key, size_t klen)
{
	size_t total = 9;
	uint8_t o = op;

	if (!add_len(&total, klen) || reserve_req(b, total))
		return -ENOMEM;
	put_raw(b, &o, 1);
	put_str(b, key, klen);
	return 0;
}

int proto_enc_key_val(struct buf *b, enum proto_op op, const void *key,
		      size_t klen, const void *val, size_t vlen)
{
	size_t total = 17;
	uint8_t o = op;

	if (!add_len(&total, klen) || !add_len(&total, vlen) ||
	    reserve_req(b, total))
		return -ENOMEM;
	put_raw(b, &o, 1);
	put_str(b, key, klen);
	put_str(b, val, vlen);
	return 0;
}

int proto_enc_compare_set(struct buf *b, const void *key, size_t klen,
			  const void *expected, size_t elen,
			  const void *desired, size_t dlen)
{
	size_t total = 25;
	uint8_t o = OP_COMPARE_SET;

	if (!add_len(&total, klen) || !add_len(&total, elen) ||
	    !add_len(&total, dlen) || reserve_req(b, total))
		return -ENOMEM;
	put_raw(b, &o, 1);
	put_str(b, key, klen);
	put_str(b, expected, elen);
	put_str(b, desired, dlen);
	return 0;
}

int proto_enc_key_i64(struct buf *b, enum proto_op op, const void *key,
		      size_t klen, int64_t v)
{
	size_t total = 17;
	uint8_t o = op;

	if (!add_len(&total, klen) || reserve_req(b, total))
		return -ENOMEM;
	put_raw(b, &o, 1);
	put_str(b, key, klen);
	put_raw(b, &v, 8);
	return 0;
}

int proto_enc_keys(struct buf *b, enum proto_op op, size_t n,
		   const void *const *keys, const size_t *klens)
{
	size_t total = 9;
	uint64_t count = n;
	uint8_t o = op;

	for (size_t k = 0; k < n; k++)
		if (!add_len(&total, 8) || !add_len(&total, klens[k]))
			return -ENOMEM;
	if (reserve_req(b, total))
		return -ENOMEM;
	put_raw(b, &o, 1);
	put_raw(b, &count, 8);
	for (size_t k = 0; k < n; k++)
		put_str(b, keys[k], klens[k]);
	return 0;
}

int proto_enc_multi_set(struct buf *b, size_t n, const void *const *keys,
			const size_t *klens, const void *const *vals,
			const size_t *vlens)
{
	size_t total = 9;
	int64_t count = (int64_t)n; /* the client sends a signed count */
	uint8_t o = OP_MULTI_SET;

	for (size_t k = 0; k < n; k++)
		if (!add_len(&total, 16) || !add_len(&total, klens[k]) ||
		    !add_len(&total, vlens[k]))
			return -ENOMEM;
	if (reserve_req(b, total))
		return -ENOMEM;
	put_raw(b, &o, 1);
	put_raw(b, &count, 8);
	for (size_t k = 0; k < n; k++) {
		put_str(b, keys[k], klens[k]);
		put_str(b, vals[k], vlens[k]);
	}
	return 0;
}

/*
 * Reply scanner. Reply kinds: fixed-width integers, a length-prefixed byte
 * string, QUEUE_POP's length that says whether a string follows, and
 * LIST_KEYS's count that opens a group of one string. MULTI_GET's group
 * count comes from the request, so its program starts inside the group.
 */
enum rfield {
	R_END,
	R_NONE, /* the opcode has no reply */
	R_U8,
	R_U32,
	R_I64,
	R_BYTES,
	R_POPLEN,
	R_COUNT,
	R_LOOP,
};

static const uint8_t reply_prog[OP__COUNT][4] = {
	[OP_VALIDATE] = { R_NONE },
	[OP_SET] = { R_NONE },
	[OP_COMPARE_SET] = { R_BYTES, R_END },
	[OP_GET] = { R_BYTES, R_END },
	[OP_ADD] = { R_I64, R_END },
	[OP_CHECK] = { R_U8, R_END },
	[OP_WAIT] = { R_U8, R_END },
	[OP_GETNUMKEYS] = { R_I64, R_END },
	[OP_DELETE_KEY] = { R_I64, R_END },
	[OP_APPEND] = { R_NONE },
	[OP_MULTI_GET] = { R_BYTES, R_LOOP, R_END },
	[OP_MULTI_SET] = { R_NONE },
	[OP_CANCEL_WAIT] = { R_U8, R_END },
	[OP_PING] = { R_U32, R_END },
	[OP_QUEUE_PUSH] = { R_NONE },
	[OP_QUEUE_POP] = { R_POPLEN, R_BYTES, R_END },
	[OP_QUEUE_LEN] = { R_I64, R_END },
	[OP_LIST_KEYS] = { R_COUNT, R_BYTES, R_LOOP, R_END },
	[OP_BARRIER] = { R_U8, R_END },
};

/*
 * Start scanning the reply to a request of opcode @op. A MULTI_GET of
 * @nkeys == 0 has an empty reply: the first feed returns 1 with *used 0.
 */
void proto_reply_init(struct proto_reply_scanner *r, enum proto_op op,
		      uint64_t nkeys, uint64_t max_len)
{
	memset(r, 0, sizeof(*r));
	r->op = (unsigned)op < OP__COUNT ? (uint8_t)op : UINT8_MAX;
	r->max_len = max_len;
	if (op == OP_MULTI_GET) {
		r->remaining = nkeys;
		if (nkeys == 0)
			r->step = 2; /* R_END */
	}
}

/*
 * Same contract as proto_decoder_feed. max_len caps every length and every
 * count field (LIST_KEYS's count, QUEUE_POP's length is only a flag and is
 * not capped). A negative LIST_KEYS count is -EPROTO.
 */
int proto_reply_feed(struct proto_reply_scanner *r, const uint8_t *p, size_t n,
		     size_t *used)
{
	size_t i = 0;

	*used = 0;
	if (r->op >= OP__COUNT)
		return -EPROTO;
	const uint8_t *pg = reply_prog[r->op];
	for (;;) {
		if (r->skip) {
			size_t take = n - i;
			if (take > r->skip)
				take = (size_t)r->skip;
			i += take;
			r->skip -= take;
			r->len += take;
			if (r->skip) {
				*used = i;
				return 0;
			}
		}

		uint8_t f = pg[r->step];
		if (f == R_END) {
			*used = i;
			return 1;
		}
		if (f == R_NONE)
			return -EPROTO;
		if (f == R_LOOP) {
			if (--r->remaining)
				r->step--;
			else
				r->step++;
			continue;
		}

		uint64_t v;
		size_t i0 = i;
		unsigned width = f == R_U8 ? 1 : f == R_U32 ? 4 : 8;
		bool done = gather(r->ibuf, &r->ilen, width, p, n, &i, &v);
		r->len += i - i0;
		if (!done) {
			*used = i;
			return 0;
		}
		r->step++;

		switch (f) {
		case R_BYTES:
			if (r->max_len && v > r->max_len) {
				*used = i;
				return -EMSGSIZE;
			}
			r->skip = v;
			break;
		case R_POPLEN:
			if ((int64_t)v <= 0)
				r->step++; /* empty queue: no string */
			break;
		case R_COUNT:
			if (v >> 63) {
				*used = i;
				return -EPROTO;
			}
			if (r->max_len && v > r->max_len) {
				*used = i;
				return -EMSGSIZE;
			}
			r->remaining = v;
			if (v == 0)
				r->step += 2; /* past R_BYTES and R_LOOP */
			break;
		default: /* R_U8, R_U32, R_I64: any value */
			break;
		}
	}
}
