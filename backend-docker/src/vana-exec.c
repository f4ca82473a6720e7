/*
 * vana-exec: the per-run init of the Docker backend, built statically into the runtime image.
 *
 *   vana-exec NONCE NPROC FSIZE PROGRAM [ARGS...]
 *
 * Runs PROGRAM in a session of its own with core dumps off (and RLIMIT_NPROC / RLIMIT_FSIZE when
 * non-zero), waits for it, kills whatever it left in its session, and exits with its exit
 * status. When PROGRAM was killed by a signal it also prints "\nNONCE:signal:N\n" on stderr, so
 * that the backend can report a signal as a signal (docker exec itself only gives 128+N).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: vana-exec NONCE NPROC FSIZE PROGRAM [ARGS...]\n");
        return 125;
    }
    const char *nonce = argv[1];
    long long nproc = atoll(argv[2]);
    long long fsize = atoll(argv[3]);
    struct rlimit zero = {0, 0};
    setrlimit(RLIMIT_CORE, &zero);
    if (fsize > 0) {
        struct rlimit f = {(rlim_t)fsize, (rlim_t)fsize};
        setrlimit(RLIMIT_FSIZE, &f);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("vana-exec: fork");
        return 125;
    }
    if (pid == 0) {
        setsid();
        if (nproc > 0) {
            struct rlimit n = {(rlim_t)nproc, (rlim_t)nproc};
            setrlimit(RLIMIT_NPROC, &n);
        }
        execvp(argv[4], argv + 4);
        fprintf(stderr, "vana-exec: %s: %s\n", argv[4], strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("vana-exec: waitpid");
            return 125;
        }
    }
    kill(-pid, SIGKILL);
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "\n%s:signal:%d\n", nonce, WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}
