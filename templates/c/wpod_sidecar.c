/* wpod_sidecar.c: the C SDK's helpers (see wpod_sidecar.h), and the component's entry point. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wpod_sidecar.h"

static char last_error[256];

const char *wpod_error(void) { return last_error; }

static void copy_string(char *dst, size_t len, const sidecar_string_t *src) {
    if (len == 0) return;
    size_t n = src->len < len - 1 ? src->len : len - 1;
    memcpy(dst, src->ptr, n);
    dst[n] = '\0';
}

/* Records why a main-process call failed, and frees the error. */
static int failed(wpod_sidecar_main_process_error_t *err) {
    switch (err->tag) {
    case WPOD_SIDECAR_MAIN_PROCESS_ERROR_NO_SUCH_CONTAINER:
        snprintf(last_error, sizeof last_error, "no such container: %.*s",
                 (int)err->val.no_such_container.len, (const char *)err->val.no_such_container.ptr);
        break;
    case WPOD_SIDECAR_MAIN_PROCESS_ERROR_NOT_RUNNING:
        snprintf(last_error, sizeof last_error, "the container is not running");
        break;
    case WPOD_SIDECAR_MAIN_PROCESS_ERROR_DENIED:
        snprintf(last_error, sizeof last_error, "denied: %.*s", (int)err->val.denied.len,
                 (const char *)err->val.denied.ptr);
        break;
    default:
        snprintf(last_error, sizeof last_error, "%.*s", (int)err->val.io.len,
                 (const char *)err->val.io.ptr);
    }
    wpod_sidecar_main_process_error_free(err);
    return -1;
}

void wpod_ready(void) { wpod_sidecar_lifecycle_ready(); }

size_t wpod_first_main(char *name, size_t len) {
    wpod_sidecar_main_process_list_info_t mains;
    wpod_sidecar_main_process_containers(&mains);
    size_t count = mains.len;
    if (count > 0) copy_string(name, len, &mains.ptr[0].name);
    wpod_sidecar_main_process_list_info_free(&mains);
    return count;
}

bool wpod_wait_running(const char *name, uint64_t timeout_ms) {
    sidecar_string_t wit_name;
    sidecar_string_set(&wit_name, name);
    for (uint64_t waited = 0;; waited += 100) {
        wpod_sidecar_main_process_info_t info;
        wpod_sidecar_main_process_error_t err;
        if (wpod_sidecar_main_process_get(&wit_name, &info, &err)) {
            bool running = info.state == WPOD_SIDECAR_MAIN_PROCESS_STATE_RUNNING;
            wpod_sidecar_main_process_info_free(&info);
            if (running) return true;
        } else {
            wpod_sidecar_main_process_error_free(&err);
        }
        if (waited >= timeout_ms) return false;
        /* Wakes up on the pod's next event (main-started), or in 100 ms at most. */
        wpod_sidecar_lifecycle_event_t event;
        if (wpod_sidecar_lifecycle_next_event(100, &event)) wpod_sidecar_lifecycle_event_free(&event);
    }
}

int wpod_stats(const char *name, wpod_stats_t *out) {
    sidecar_string_t wit_name;
    sidecar_string_set(&wit_name, name);
    wpod_sidecar_main_process_error_t err;
    if (!wpod_sidecar_main_process_stats(&wit_name, out, &err)) return failed(&err);
    return 0;
}

int wpod_signal(const char *name, uint32_t signal) {
    sidecar_string_t wit_name;
    sidecar_string_set(&wit_name, name);
    wpod_sidecar_main_process_error_t err;
    if (!wpod_sidecar_main_process_signal(&wit_name, signal, &err)) return failed(&err);
    return 0;
}

int wpod_logs_open(const char *name, bool from_beginning, wpod_logs_t *logs) {
    sidecar_string_t wit_name;
    sidecar_string_set(&wit_name, name);
    wpod_sidecar_main_process_error_t err;
    memset(logs, 0, sizeof *logs);
    wpod_sidecar_main_process_log_start_t start = from_beginning
        ? WPOD_SIDECAR_MAIN_PROCESS_LOG_START_BEGINNING
        : WPOD_SIDECAR_MAIN_PROCESS_LOG_START_NOW;
    if (!wpod_sidecar_main_process_logs(&wit_name, start, &logs->stream, &err)) return failed(&err);
    return 0;
}

int wpod_logs_next(wpod_logs_t *logs, char *line, size_t len) {
    if (logs->next >= logs->lines.len) {
        wpod_sidecar_main_process_list_log_line_free(&logs->lines);
        logs->next = 0;
        wpod_sidecar_main_process_method_log_stream_next(
            wpod_sidecar_main_process_borrow_log_stream(logs->stream), 64, &logs->lines);
        if (logs->lines.len == 0) return 0;
    }
    copy_string(line, len, &logs->lines.ptr[logs->next++].text);
    return 1;
}

void wpod_logs_close(wpod_logs_t *logs) {
    wpod_sidecar_main_process_list_log_line_free(&logs->lines);
    wpod_sidecar_main_process_log_stream_drop_own(logs->stream);
    memset(logs, 0, sizeof *logs);
}

bool wpod_next_event(uint64_t timeout_ms, wpod_event_t *event) {
    wpod_sidecar_lifecycle_event_t wit;
    if (!wpod_sidecar_lifecycle_next_event(timeout_ms, &wit)) return false;
    memset(event, 0, sizeof *event);
    switch (wit.tag) {
    case WPOD_SIDECAR_LIFECYCLE_EVENT_MAIN_STARTED:
        event->kind = WPOD_EVENT_MAIN_STARTED;
        copy_string(event->container, sizeof event->container, &wit.val.main_started);
        break;
    case WPOD_SIDECAR_LIFECYCLE_EVENT_MAIN_EXITED:
        event->kind = WPOD_EVENT_MAIN_EXITED;
        copy_string(event->container, sizeof event->container, &wit.val.main_exited.f0);
        event->exit_code = wit.val.main_exited.f1;
        break;
    default:
        event->kind = WPOD_EVENT_STOPPING;
        event->ms_left = wit.val.stopping;
    }
    wpod_sidecar_lifecycle_event_free(&wit);
    return true;
}

uint64_t wpod_wait_stopping(void) {
    wpod_event_t event;
    for (;;) {
        if (wpod_next_event(60 * 1000, &event) && event.kind == WPOD_EVENT_STOPPING) return event.ms_left;
    }
}

/* The component's `wasi:cli/run`: built as a reactor (so the host may call back into the
 * module, e.g. cabi_realloc, without re-running its constructors), the program's main runs here
 * as a command's `_start` would run it: arguments read, main called, stdio flushed at exit. */
extern int __main_void(void);
extern void __wasm_call_dtors(void);

bool exports_wasi_cli_run_run(void) {
    int code = __main_void();
    if (code != 0) exit(code);
    __wasm_call_dtors();
    return true;
}
