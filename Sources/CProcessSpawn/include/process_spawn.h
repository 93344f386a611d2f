#ifndef MCPGW_PROCESS_SPAWN_H
#define MCPGW_PROCESS_SPAWN_H

#include <sys/types.h>

/// Spawns `path` with `argv`/`envp` (NULL-terminated) in its own process group, with every signal
/// reset to its default disposition and an empty signal mask, and `cwd` as working directory
/// (NULL: inherit). The child inherits descriptors 0, 1 and 2 only. On success returns 0 and stores the child's pid and the parent's ends of
/// its stdin (write), stdout (read) and stderr (read) pipes, all close-on-exec and non-blocking.
/// On failure returns an errno value and creates nothing.
int mcpgw_spawn(const char *path, char *const argv[], char *const envp[], const char *cwd,
                pid_t *pid, int *stdin_fd, int *stdout_fd, int *stderr_fd);

#endif
