/* The job's files in /box: the init writes those the job came with (owned by the job
 * user) before the hand-over, and collects the regular files the job left (a compile
 * step's output) when the supervisor asks. */
#include "sandboxd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The job message's `count` files (name, then bytes: the rest of its "files" map) into
 * /box, owned by the job user; subdirectories are made as needed. */
int write_files(struct rd *r, uint64_t count, uid_t uid, gid_t gid) {
    for (uint64_t i = 0; i < count; i++) {
        uint64_t nlen, clen;
        const unsigned char *name, *content;
        if (mp_next(r, &nlen, &name) != T_STR || mp_next(r, &clen, &content) != T_BIN)
            return failf("ValueError: a file is not a name and its bytes");
        char rel[PATH_MAX], path[PATH_MAX + 8];
        if (nlen == 0 || nlen >= sizeof rel || memchr(name, 0, nlen) || name[0] == '/')
            return failf("ValueError: file name must be relative and stay inside /box");
        memcpy(rel, name, nlen);
        rel[nlen] = 0;
        for (const char *c = rel; *c;) { /* no ".." component */
            size_t clen = strcspn(c, "/");
            if (clen == 2 && c[0] == '.' && c[1] == '.')
                return failf("ValueError: file name %s must be relative and stay inside /box", rel);
            c += clen;
            c += *c == '/';
        }
        snprintf(path, sizeof path, "/box/%s", rel);
        /* Subdirectories of /box are made here and given to the job user, each level. */
        for (char *c = path + 5; (c = strchr(c, '/')); c++) {
            *c = 0;
            int made = mkdir(path, 0755) == 0;
            if (!made && errno != EEXIST) return failf("OSError: mkdir %s: %s", path, strerror(errno));
            if (made && lchown(path, uid, gid)) return failf("OSError: chown %s: %s", path, strerror(errno));
            *c = '/';
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755);
        if (fd < 0) return failf("OSError: %s: %s", path, strerror(errno));
        for (uint64_t done = 0; done < clen;) {
            ssize_t k = write(fd, content + done, clen - done);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) { close(fd); return failf("OSError: write %s: %s", path, strerror(errno)); }
            done += (uint64_t)k;
        }
        if (fchown(fd, uid, gid)) { close(fd); return failf("OSError: chown: %s", strerror(errno)); }
        close(fd);
    }
    return 0;
}

static int namecmp(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

#define MAX_DEPTH 64

/* Regular files under /box, never following a symlink the job may have planted; at most
 * MAX_DEPTH directories deep (each level costs this process a few KiB of stack). */
int collect(const char *dir, struct files *f, int depth) {
    if (depth > MAX_DEPTH)
        return failf("ValueError: the job left directories more than %d deep in /box", MAX_DEPTH);
    struct dirent **names;
    int n = scandir(dir, &names, NULL, namecmp);
    if (n < 0) return failf("OSError: %s: %s", dir, strerror(errno));
    int r = 0;
    for (int pass = 0; pass < 2 && !r; pass++) { /* files of a directory, then its subdirs */
        for (int i = 0; i < n && !r; i++) {
            const char *name = names[i]->d_name;
            if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
            char path[PATH_MAX];
            if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) continue;
            struct stat st;
            if (lstat(path, &st)) { r = failf("OSError: %s: %s", path, strerror(errno)); break; }
            if (pass == 1) {
                if (S_ISDIR(st.st_mode)) r = collect(path, f, depth + 1);
                continue;
            }
            if (!S_ISREG(st.st_mode)) continue;
            f->total += (uint64_t)st.st_size;
            if (f->total > f->max_bytes || f->count >= f->max_files) {
                r = failf("ValueError: the job left more than %llu bytes or %llu files in /box",
                          (unsigned long long)f->max_bytes, (unsigned long long)f->max_files);
                break;
            }
            int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) { r = failf("OSError: %s: %s", path, strerror(errno)); break; }
            size_t cap = (size_t)st.st_size < f->max_bytes ? (size_t)st.st_size + 1 : f->max_bytes + 1;
            char *data = malloc(cap ? cap : 1);
            size_t got = 0;
            ssize_t k = 0;
            while (data && got < cap && (k = read(fd, data + got, cap - got)) > 0) got += (size_t)k;
            close(fd);
            if (!data || k < 0) { free(data); r = failf("OSError: read %s: %s", path, strerror(errno)); break; }
            mp_cstr(&f->out, path + 5); /* relative to /box */
            mp_bin(&f->out, data, got);
            free(data);
            f->count++;
        }
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return r;
}
