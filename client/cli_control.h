/* SPDX-License-Identifier: MIT */
/*
 * cli_control.h - ringstore-cli subcommands that read the server's HTTP
 * control plane (status, keys, waiters, barriers) instead of the store.
 */
#ifndef RS_CLIENT_CLI_CONTROL_H
#define RS_CLIENT_CLI_CONTROL_H

#include <stdbool.h>

/* Is @op a control-plane subcommand? */
bool cli_control_op(const char *op);

/*
 * Run control-plane subcommand @op against @control ("HOST:PORT" or
 * "unix:PATH") with its @argc arguments; @raw: key prefixes are sent as
 * given (no '/'). Returns the CLI exit status.
 */
int cli_control_run(const char *control, const char *op, int argc, char **argv,
		    bool json, bool raw);

/* Lines for the CLI's --help. */
extern const char cli_control_help[];

#endif
