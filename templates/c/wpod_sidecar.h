/* wpod_sidecar.h: write wpod sidecars in C (made by `wpod new --lang c`).
 *
 * Plain C helpers over wpod's own interfaces (wit/sidecar.wit, wpod:sidecar@{{wit_version}}):
 * readiness, the pod's events (`stopping` among them), the main containers' state, statistics
 * and output, and signals. The generated bindings (bindings/sidecar.h, from `wit-bindgen c`)
 * stay available for everything else, WASI 0.2's sockets and poll among them.
 *
 * Write an ordinary `int main(void)`: wpod_sidecar.c exports it as the component's
 * `wasi:cli/run`. What the sidecar may touch is what its pod grants (README "Grants").
 */
#ifndef WPOD_SIDECAR_H
#define WPOD_SIDECAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sidecar.h"

/* Live statistics of a main container's process (see wit/sidecar.wit, process-stats). */
typedef wpod_sidecar_main_process_process_stats_t wpod_stats_t;

/* The pod's events. */
typedef enum {
    WPOD_EVENT_MAIN_STARTED,
    WPOD_EVENT_MAIN_EXITED,
    WPOD_EVENT_STOPPING,
} wpod_event_kind_t;

typedef struct {
    wpod_event_kind_t kind;
    /* The main container it is about (MAIN_STARTED, MAIN_EXITED). */
    char container[64];
    /* MAIN_EXITED: its exit code. */
    int32_t exit_code;
    /* STOPPING: milliseconds left before the sidecar is stopped. */
    uint64_t ms_left;
} wpod_event_t;

/* A main container's output, line by line. */
typedef struct {
    wpod_sidecar_main_process_own_log_stream_t stream;
    wpod_sidecar_main_process_list_log_line_t lines;
    size_t next;
} wpod_logs_t;

/* Why the last call that failed failed (a static buffer). */
const char *wpod_error(void);

/* Tells the pod this sidecar is ready: containers ordered after it may start. */
void wpod_ready(void);

/* Copies the name of the pod's first main container into `name` (at most `len` bytes with its
 * NUL). Returns the number of main containers (0: none, `name` untouched). Needs
 * `shareProcessNamespace: true`, as every main-process call does. */
size_t wpod_first_main(char *name, size_t len);

/* Waits up to `timeout_ms` until main container `name` runs. Returns whether it does. */
bool wpod_wait_running(const char *name, uint64_t timeout_ms);

/* Fills `out` with main container `name`'s statistics. 0 on success, -1 (see wpod_error). */
int wpod_stats(const char *name, wpod_stats_t *out);

/* Sends `signal` (a Linux signal number) to main container `name`; needs the sidecar's
 * `securityContext.capabilities.add: [KILL]`. 0 on success, -1 (see wpod_error). */
int wpod_signal(const char *name, uint32_t signal);

/* Follows main container `name`'s stdout and stderr, from its first line or from now on.
 * 0 on success, -1 (see wpod_error). */
int wpod_logs_open(const char *name, bool from_beginning, wpod_logs_t *logs);

/* Waits for the next line and copies it into `line` (at most `len` bytes with its NUL).
 * Returns 1 for a line, 0 once the container exited and every line was delivered. */
int wpod_logs_next(wpod_logs_t *logs, char *line, size_t len);

/* Ends a subscription. */
void wpod_logs_close(wpod_logs_t *logs);

/* Waits up to `timeout_ms` for the pod's next event. Returns whether one came. */
bool wpod_next_event(uint64_t timeout_ms, wpod_event_t *event);

/* Waits until the pod stops; returns the milliseconds the sidecar has left. */
uint64_t wpod_wait_stopping(void);

#endif
