/* SPDX-License-Identifier: MIT */
/*
 * log.h - levelled, timestamped logging to stderr.
 *
 * One line per call: "<ISO-8601 UTC time> <LEVEL> <message>". The level is a
 * process-wide setting read with a relaxed load, so any thread may log. Each
 * line is written with a single write(2), so lines from several threads never
 * interleave.
 */
#ifndef RS_COMMON_LOG_H
#define RS_COMMON_LOG_H

enum log_level {
	LOG_LVL_ERROR,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
};

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* "error", "warn", "info", "debug" -> level; -EINVAL otherwise. */
int log_parse_level(const char *s);

void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_enabled(lvl) ((lvl) <= log_get_level())
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                       \
	do {                                                 \
		if (log_enabled(LOG_LVL_DEBUG))              \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__); \
	} while (0)

#endif
