/* SPDX-License-Identifier: MIT */
/*
 * json.h - the control plane's writer: text appended to a buf with a sticky
 * error, and JSON strings of arbitrary bytes.
 *
 * Rendering code appends freely and checks once, at the end, whether any
 * append failed (o->err, the first -ENOMEM or -EINVAL). JSON strings are
 * pure ASCII: keys and values may be binary, so every byte outside
 * printable ASCII is written as \u00XX (the bytes read as Latin-1).
 *
 * A json_out is used by one thread; it borrows its buf.
 */
#ifndef RS_SERVER_JSON_H
#define RS_SERVER_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct json_out {
	struct buf *b; /* borrowed: appended to */
	int err;       /* 0, or the first failure; nothing is appended after */
};

/* @n bytes as they are. */
void json_raw(struct json_out *o, const void *p, size_t n);
/* A C string as it is (no quotes, no escaping). */
void json_text(struct json_out *o, const char *s);
/* printf-formatted text, straight into the buf's tail. */
__attribute__((format(printf, 2, 3))) void json_printf(struct json_out *o,
						       const char *fmt, ...);
/* A JSON string of @n arbitrary bytes, quotes included. */
void json_str(struct json_out *o, const uint8_t *p, size_t n);
/* A JSON string of a C string. */
void json_cstr(struct json_out *o, const char *s);
/* A document {"error": why} and a newline. */
void json_error(struct json_out *o, const char *why);

/* The unread bytes of @b, or NULL when there are none. */
static inline const uint8_t *json_bytes_of(const struct buf *b)
{
	return buf_used(b) ? buf_head(b) : NULL;
}

#endif
