/* The pod sandbox's process for the one-node test cluster (issue 19): it holds the pod's
 * namespaces, reaps orphans (it is PID 1 when the pod shares its PID namespace) and exits on
 * SIGINT or SIGTERM. Built static by scripts/build-kube.sh into the `pause` image. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_stop = {.sa_handler = stop}, on_child = {.sa_handler = reap,
                                                                .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &on_stop, NULL) || sigaction(SIGTERM, &on_stop, NULL) ||
      sigaction(SIGCHLD, &on_child, NULL))
    return 1;
  for (;;) pause();
}
