#define _GNU_SOURCE
#include "file_fingerprint.h"

#include <errno.h>
#include <sys/stat.h>

int mcpgw_file_fingerprint(const char *path, uint64_t *inode, int64_t *size, int64_t *seconds, int64_t *nanoseconds) {
    struct stat info;
    if (stat(path, &info) != 0) return errno;
    *inode = (uint64_t)info.st_ino;
    *size = (int64_t)info.st_size;
    *seconds = (int64_t)info.st_mtim.tv_sec;
    *nanoseconds = (int64_t)info.st_mtim.tv_nsec;
    return 0;
}
