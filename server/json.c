/* SPDX-License-Identifier: MIT */
/*
 * json.c - see json.h.
 */
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void json_raw(struct json_out *o, const void *p, size_t n)
{
	if (!o->err && n)
		o->err = buf_append(o->b, p, n);
}

void json_text(struct json_out *o, const char *s)
{
	json_raw(o, s, strlen(s));
}

void json_printf(struct json_out *o, const char *fmt, ...)
{
	struct buf *b = o->b;
	size_t room = 256; /* a line of numbers and names */
	va_list ap;
	int n;

	/* Formatted in place at the reply's tail; a longer line (a metric's
	 * help text) is formatted once more into room for all of it. */
	while (!o->err) {
		if (buf_reserve(b, room)) {
			o->err = -ENOMEM;
			return;
		}
		va_start(ap, fmt);
		n = vsnprintf((char *)b->data + b->len, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->err = -EINVAL;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		room = (size_t)n + 1;
	}
}

void json_str(struct json_out *o, const uint8_t *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	json_raw(o, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		uint8_t ch = p[i];
		char esc[6] = {
			'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]
		};

		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
			continue;
		json_raw(o, p + run, i - run);
		run = i + 1;
		if (ch == '"' || ch == '\\') {
			esc[1] = (char)ch;
			json_raw(o, esc, 2);
		} else if (ch == '\n') {
			json_raw(o, "\\n", 2);
		} else if (ch == '\t') {
			json_raw(o, "\\t", 2);
		} else {
			json_raw(o, esc, sizeof(esc));
		}
	}
	json_raw(o, p + run, n - run);
	json_raw(o, "\"", 1);
}

void json_cstr(struct json_out *o, const char *s)
{
	json_str(o, (const uint8_t *)s, strlen(s));
}

void json_error(struct json_out *o, const char *why)
{
	json_text(o, "{\"error\":");
	json_cstr(o, why);
	json_text(o, "}\n");
}
