#ifndef MCPGW_FILE_FINGERPRINT_H
#define MCPGW_FILE_FINGERPRINT_H

#include <stdint.h>

/// What identifies a version of a file for the configuration watcher: inode, size and the
/// modification time (seconds and nanoseconds), from one stat(2). Returns 0, or an errno value.
/// (A C function: the fields of `struct stat` reach Swift through whichever module clang
/// attributes the header to, which differs between builds.)
int mcpgw_file_fingerprint(const char *path, uint64_t *inode, int64_t *size, int64_t *seconds, int64_t *nanoseconds);

#endif
