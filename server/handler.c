/* SPDX-License-Identifier: MIT */
/*
 * handler.c - see handler.h.
 */
#include "handler.h"

#include "http.h"
#include "json.h"

const char *handler_param(const struct handler_request *req, const char *name,
			  size_t *len)
{
	return http_param(req->params, req->nparams, name, len);
}

int handler_error(struct handler_response *resp, int status, const char *why)
{
	struct json_out o = { .b = &resp->body };

	buf_reset(&resp->body);
	resp->status = status;
	resp->content_type = HANDLER_CT_JSON;
	json_error(&o, why);
	return o.err;
}
