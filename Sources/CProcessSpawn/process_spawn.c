#define _GNU_SOURCE
#include "process_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

static void close_pair(int fds[2]) {
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
}

int mcpgw_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
                pid_t *pid, int *stdin_fd, int *stdout_fd, int *stderr_fd) {
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
        int saved = errno;
        close_pair(in_pipe);
        close_pair(out_pipe);
        close_pair(err_pipe);
        return saved;
    }

    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);

    // dup2 clears close-on-exec on the child's copies; the originals close at exec.
    posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
    // The child gets descriptors 0, 1 and 2 and nothing else: not the gateway's listening
    // sockets, client connections, Redis connections or files, whether or not whoever opened
    // them asked for close-on-exec (glibc >= 2.34).
    posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
    if (cwd != NULL) {
        posix_spawn_file_actions_addchdir_np(&actions, cwd);
    }

    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setpgroup(&attributes, 0);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);

    pid_t child = 0;
    int result = posix_spawn(&child, path, &actions, &attributes, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);

    close(in_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[1]);
    if (result != 0) {
        close(in_pipe[1]);
        close(out_pipe[0]);
        close(err_pipe[0]);
        return result;
    }
    fcntl(in_pipe[1], F_SETFL, fcntl(in_pipe[1], F_GETFL) | O_NONBLOCK);
    fcntl(out_pipe[0], F_SETFL, fcntl(out_pipe[0], F_GETFL) | O_NONBLOCK);
    fcntl(err_pipe[0], F_SETFL, fcntl(err_pipe[0], F_GETFL) | O_NONBLOCK);
    *pid = child;
    *stdin_fd = in_pipe[1];
    *stdout_fd = out_pipe[0];
    *stderr_fd = err_pipe[0];
    return 0;
}
