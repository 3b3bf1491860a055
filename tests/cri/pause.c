/* A minimal pod "pause" process for the offline CRI harness (tests/cri).
 *
 * It holds the pod's namespaces open, reaps children when it is PID 1 of a
 * shared PID namespace, and exits at once on SIGTERM or SIGINT, which is all
 * that containerd's CRI asks of a sandbox image. Built by setup.sh with
 * `gcc -static -Os -s` so the image needs no libc.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) {
        pause();
    }
}
