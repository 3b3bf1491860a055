/* {{name}}: a wpod sidecar in C. It reads the main container's first line of output and its
 * live statistics, tells the pod it is ready, and stops cleanly when the pod stops: a starting
 * point. wpod_sidecar.h lists what else it can do. */
#include <stdio.h>

#include "wpod_sidecar.h"

int main(void) {
    wpod_ready();
    printf("{{name}}: ready\n");
    fflush(stdout);

    char main_name[64];
    if (wpod_first_main(main_name, sizeof main_name) == 0) {
        printf("{{name}}: the pod has no main container to watch\n");
        return 0;
    }
    wpod_logs_t logs;
    char line[1024];
    if (wpod_logs_open(main_name, true, &logs) == 0) {
        if (wpod_logs_next(&logs, line, sizeof line))
            printf("{{name}}: %s said \"%s\"\n", main_name, line);
        wpod_logs_close(&logs);
    } else {
        printf("{{name}}: cannot follow %s: %s\n", main_name, wpod_error());
    }
    fflush(stdout);

    wpod_wait_running(main_name, 10 * 1000);
    wpod_stats_t stats;
    if (wpod_stats(main_name, &stats) == 0)
        printf("{{name}}: %s uses %llu KiB of memory and %u threads\n", main_name,
               (unsigned long long)(stats.rss_bytes / 1024), (unsigned)stats.threads);
    else
        printf("{{name}}: no statistics for %s: %s\n", main_name, wpod_error());
    fflush(stdout);

    uint64_t left = wpod_wait_stopping();
    printf("{{name}}: stopping (%llu ms left)\n", (unsigned long long)left);
    return 0;
}
