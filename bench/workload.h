/* SPDX-License-Identifier: MIT */
/*
 * workload.h - the table of ringstore-bench's workloads (see workload.c for
 * each one's request pattern). Each row is a struct bench_workload of hooks
 * that the engine calls; main.c looks a row up by its --workload name.
 */
#ifndef RS_BENCH_WORKLOAD_H
#define RS_BENCH_WORKLOAD_H

#include <stdio.h>

#include "engine.h"

/* The row named @name, or NULL. */
const struct bench_workload *workload_find(const char *name);

/* Print every workload's name and help text for --help. */
void workload_usage(FILE *f);

#endif
