/* SPDX-License-Identifier: MIT */
/*
 * options.h - the ringstore command line: what it sets, and the parser.
 *
 * One table in options.c names every flag: its long and short names, the
 * kind of argument it takes, the field of struct options it fills, its
 * default and its help text. getopt_long's array, the parsing and the
 * --help text all come from that table, so a new flag is one entry there
 * plus the field it fills (and the code that uses the value).
 *
 * Sans-I/O: options_parse() reads only argv and writes only the struct and
 * the error it is given; it never prints or exits, so tests/unit/
 * test_options.c parses argv arrays directly. main() owns the struct for the
 * process's life and decides how to report an error (only main() exits).
 * Not thread-safe: getopt_long keeps its state in globals.
 */
#ifndef RS_SERVER_OPTIONS_H
#define RS_SERVER_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server.h"

/* --io: the order of the words in options.c's table. */
enum options_io {
	OPTIONS_IO_AUTO,
	OPTIONS_IO_URING,
	OPTIONS_IO_EPOLL,
};

/*
 * Every value the command line sets. A field a flag leaves out keeps its
 * default: the table's, or the preset named here (-1, 0 or NULL), which
 * main() turns into a value it must compute (from the CPUs, the kernel).
 * Strings are borrowed from argv, or point at the table's literals.
 */
struct options {
	/* For struct server: main() moves it there (cfg.allow is owned).
	 * cfg.threads 0: not given (main() sizes it by the CPUs);
	 * cfg.spread_sends is main()'s, from spread_sends below. */
	struct server_config cfg;
	const char *bind; /* NULL: "::", falling back to 0.0.0.0 */
	uint16_t port;
	int listen_fd;       /* -1: none (systemd's, if it gave one) */
	int backlog;         /* -1: the kernel's maximum */
	size_t initial_keys; /* table slots to start with */
	uint64_t max_memory; /* store bytes; 0: no cap */
	int keepalive;       /* TCP keepalive idle seconds; 0: off */
	int control_port;    /* -1: no TCP control listener */
	const char *control_bind;
	const char *control_socket; /* Unix socket path, or NULL */
	uint32_t io;                /* enum options_io */
	bool mget_cache;
	int64_t spread_sends;       /* -1: main()'s default, by the CPUs */
	const char *data_dir;       /* the write log's directory; NULL: none */
	uint32_t fsync;             /* enum wal_fsync */
	bool repair_log;            /* keep a damaged log's good prefix */
	uint64_t compact_min_bytes; /* log bytes before compaction */
	uint32_t idle_exit_s;       /* exit after this long with no client;
				     * 0: never */
	uint32_t log_level;         /* enum log_level */
	bool help;                  /* --help: print options_usage(), exit 0 */
	bool version;               /* --version */
};

/* Why a command line was refused. */
struct options_error {
	char msg[256]; /* one line, without the program's name */
	bool usage;    /* not a bad value but a bad line (an unknown flag, a
			 * missing argument, a stray word): show the usage */
};

/*
 * Fill @o from @argv: the defaults first, then each flag in order (a flag
 * given twice keeps its last value; a repeatable one, such as --allow,
 * collects them all), then the checks that involve several flags. --help
 * and --version end the parse where they stand, as if the rest were not
 * there. getopt_long reorders @argv's pointers (not the strings).
 *
 * Returns 0, or -EINVAL with @err filled (a bad flag, value or word), or
 * -ENOMEM. Either way options_free() must follow when @o is done with.
 */
int options_parse(struct options *o, int argc, char **argv,
		  struct options_error *err);

/* Free what options_parse() allocated (cfg.allow, unless moved away). */
void options_free(struct options *o);

/* The --help text, generated from the table, to @f. */
void options_usage(FILE *f);

#endif
