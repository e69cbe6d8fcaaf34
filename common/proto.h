/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the PyTorch c10d TCPStore wire protocol (see docs/protocol.md).
 *
 * Sans-I/O: nothing here touches a socket. Three pieces:
 *  - the opcode list (one X-macro) and the reply enums;
 *  - an incremental request decoder that finds where a request ends, checking
 *    every length and count against the limits as soon as it is read, and a
 *    parser that turns a complete, already-scanned request into slices;
 *  - encoders that append requests to a struct buf (the server writes its
 *    replies straight into a connection's output queue: store.c), and an
 *    incremental reply scanner for clients and the benchmark.
 *
 * All integers on the wire are little-endian (host order on every supported
 * platform; compiler.h refuses to build elsewhere).
 */
#ifndef RS_COMMON_PROTO_H
#define RS_COMMON_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"

/* X(name, value): every QueryType of torch 2.13's TCPStoreBackend.hpp. */
#define PROTO_OPS(X)       \
	X(VALIDATE, 0)     \
	X(SET, 1)          \
	X(COMPARE_SET, 2)  \
	X(GET, 3)          \
	X(ADD, 4)          \
	X(CHECK, 5)        \
	X(WAIT, 6)         \
	X(GETNUMKEYS, 7)   \
	X(DELETE_KEY, 8)   \
	X(APPEND, 9)       \
	X(MULTI_GET, 10)   \
	X(MULTI_SET, 11)   \
	X(CANCEL_WAIT, 12) \
	X(PING, 13)        \
	X(QUEUE_PUSH, 14)  \
	X(QUEUE_POP, 15)   \
	X(QUEUE_LEN, 16)   \
	X(LIST_KEYS, 17)   \
	X(BARRIER, 18)

enum proto_op {
#define PROTO_X_ENUM(name, val) OP_##name = val,
	PROTO_OPS(PROTO_X_ENUM)
#undef PROTO_X_ENUM
	OP__COUNT
};

/* "SET", "COMPARE_SET", ...; "?" for values outside the list. */
const char *proto_op_name(unsigned op);

#define PROTO_MAGIC 0x3C85F7CEu

enum {
	PROTO_CHECK_READY = 0,
	PROTO_CHECK_NOT_READY = 1
};
enum {
	PROTO_WAIT_STOP = 0,
	PROTO_WAIT_CANCELED = 1
};

/* Why a request stream was rejected: one counter per reason in the server. */
#define PROTO_ERRS(X)                                      \
	X(NONE, "no error")                                \
	X(NOT_VALIDATED, "first request is not VALIDATE")  \
	X(BAD_MAGIC, "VALIDATE with a wrong magic number") \
	X(UNKNOWN_OP, "unknown opcode")                    \
	X(KEY_TOO_LONG, "key longer than the limit")       \
	X(VALUE_TOO_LONG, "value longer than the limit")   \
	X(TOO_MANY_KEYS, "key count over the limit")       \
	X(REQUEST_TOO_LONG, "request larger than the limit")

enum proto_err {
#define PROTO_X_ERR(name, text) PROTO_E_##name,
	PROTO_ERRS(PROTO_X_ERR)
#undef PROTO_X_ERR
	PROTO_E__COUNT
};

/* Short identifier ("bad_magic") and a sentence for logs. */
const char *proto_err_name(enum proto_err e);
const char *proto_err_text(enum proto_err e);

struct proto_limits {
	uint64_t max_key;   /* bytes in one key */
	uint64_t max_value; /* bytes in one value */
	uint64_t max_keys; /* keys in CHECK/WAIT/MULTI_GET, pairs in MULTI_SET */
	uint64_t max_request; /* bytes in one whole request, opcode included */
};

#define PROTO_DEFAULT_MAX_KEY 8192u
#define PROTO_DEFAULT_MAX_VALUE (8u << 20)
#define PROTO_DEFAULT_MAX_KEYS 131072u
#define PROTO_DEFAULT_MAX_REQUEST (64u << 20)

void proto_limits_default(struct proto_limits *lim);

/*
 * Incremental request scanner. Its state is a cursor: which field of which
 * opcode it is in, and how many bytes that field still needs. It never copies
 * payload bytes and never allocates; the caller keeps the bytes (in place in
 * its receive buffer, or in a spill buffer when a request spans reads).
 */
struct proto_decoder {
	const struct proto_limits *lim; /* borrowed */
	bool handshake;                 /* the next request must be VALIDATE */
	bool in_req; /* some bytes of a request have been seen */
	uint8_t op;
	uint8_t step;       /* position in the opcode's field program */
	uint8_t ilen;       /* bytes gathered in ibuf */
	uint8_t ibuf[8];    /* a fixed-width integer split across feeds */
	uint64_t remaining; /* items left in a repeated group */
	uint64_t skip;      /* payload bytes still to pass over */
	uint64_t req_len;   /* bytes of the current request seen so far */
	enum proto_err err; /* why the last feed failed */
};

/* Start a connection's decoder: handshake on, so VALIDATE must come first. */
void proto_decoder_init(struct proto_decoder *d, const struct proto_limits *lim,
			bool handshake);

/*
 * Scan @n bytes at @p, stopping at the end of the current request.
 * Returns 1 when a request ended: *used is how many bytes of @p belong to it
 * (the request is d->req_len bytes in total, counting earlier feeds) and the
 * decoder is ready for the next request (call proto_decoder_next first).
 * Returns 0 when all @n bytes were consumed and the request is not complete.
 * Returns -EPROTO or -EMSGSIZE on a violation; d->err names it and the stream
 * must be dropped. A VALIDATE with the right magic clears d->handshake.
 */
int proto_decoder_feed(struct proto_decoder *d, const uint8_t *p, size_t n,
		       size_t *used);

/* After a feed returned 1: forget the finished request. */
void proto_decoder_next(struct proto_decoder *d);

struct proto_slice {
	const uint8_t *p; /* borrowed from the request bytes */
	uint64_t len;
};

/*
 * A parsed request. Slices point into the request bytes and live as long as
 * they do. Lists (CHECK/WAIT/MULTI_GET keys, MULTI_SET pairs) stay encoded
 * and are walked with proto_next_str(), so a 131072-key request needs no
 * array.
 */
struct proto_req {
	enum proto_op op;
	struct proto_slice key; /* single-key ops */
	struct proto_slice
		val[2]; /* SET/APPEND/QUEUE_PUSH: [0]; COMPARE_SET: expected, desired */
	int64_t num;         /* ADD delta, BARRIER world size */
	uint32_t u32;        /* VALIDATE magic, PING nonce */
	uint64_t count;      /* list length: keys, or pairs for MULTI_SET */
	const uint8_t *list; /* first byte of the encoded list */
	const uint8_t *end;  /* one past the request's last byte */
};

/*
 * Parse one complete request of @len bytes that proto_decoder_feed accepted.
 * Returns 0, or -EPROTO if the bytes are not one whole well-formed request
 * (defensive: the decoder already proved they are).
 */
int proto_parse(const uint8_t *p, size_t len, struct proto_req *req);

/*
 * The same for bytes that proto_decoder_feed framed as one request, without
 * walking a key list again (the decoder walked it): a server's hot path.
 * On other bytes a list's items are not checked.
 */
int proto_parse_framed(const uint8_t *p, size_t len, struct proto_req *req);

/*
 * Read one length-prefixed string at *cur (which must be inside a list that
 * the decoder validated) and advance *cur past it. Inline: MULTI_GET and
 * MULTI_SET call it for every key and value.
 */
static inline void proto_next_str(const uint8_t **cur, struct proto_slice *out)
{
	uint64_t len;

	memcpy(&len, *cur, 8);
	out->p = *cur + 8;
	out->len = len;
	*cur += 8 + len;
}

/*
 * Request encoders (client side). Keys are sent exactly as given (callers
 * add PyTorch's "/" prefix). Each returns 0 or -ENOMEM.
 */
int proto_enc_validate(struct buf *b);
int proto_enc_ping(struct buf *b, uint32_t nonce);
/* Ops with no body: GETNUMKEYS, CANCEL_WAIT, LIST_KEYS. */
int proto_enc_bare(struct buf *b, enum proto_op op);
/* Ops with one key: GET, DELETE_KEY, QUEUE_POP, QUEUE_LEN. */
int proto_enc_key(struct buf *b, enum proto_op op, const void *key,
		  size_t klen);
/* Ops with a key and a value: SET, APPEND, QUEUE_PUSH. */
int proto_enc_key_val(struct buf *b, enum proto_op op, const void *key,
		      size_t klen, const void *val, size_t vlen);
int proto_enc_compare_set(struct buf *b, const void *key, size_t klen,
			  const void *expected, size_t elen,
			  const void *desired, size_t dlen);
/* ADD (delta) and BARRIER (world size). */
int proto_enc_key_i64(struct buf *b, enum proto_op op, const void *key,
		      size_t klen, int64_t v);
/* CHECK, WAIT, MULTI_GET: n keys. */
int proto_enc_keys(struct buf *b, enum proto_op op, size_t n,
		   const void *const *keys, const size_t *klens);
int proto_enc_multi_set(struct buf *b, size_t n, const void *const *keys,
			const size_t *klens, const void *const *vals,
			const size_t *vlens);

/*
 * Incremental reply scanner (client side): finds where the reply to a request
 * of opcode @op ends, for pipelined readers. @nkeys is the key count of a
 * MULTI_GET (ignored otherwise). Same contract as proto_decoder_feed: 1 with
 * *used when the reply ended (r->len is its total size), 0 for need-more,
 * -EPROTO for an opcode that has no reply or a malformed reply, -EMSGSIZE for
 * a length over r->max_len. WAIT/BARRIER/CANCEL_WAIT replies are one byte
 * each; a caller handling the "00 01" cancel race scans twice.
 */
struct proto_reply_scanner {
	uint8_t op;
	uint8_t step;
	uint8_t ilen;
	uint8_t ibuf[8];
	uint64_t remaining;
	uint64_t skip;
	uint64_t len;
	uint64_t max_len; /* cap on any one length field; 0 = no cap */
};

void proto_reply_init(struct proto_reply_scanner *r, enum proto_op op,
		      uint64_t nkeys, uint64_t max_len);
int proto_reply_feed(struct proto_reply_scanner *r, const uint8_t *p, size_t n,
		     size_t *used);

#endif
