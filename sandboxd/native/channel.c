/* The init's end of the supervisor's control channel (sandboxd/channel.py's framing):
 * each frame a 4-byte big-endian length and a msgpack map; descriptors ride with the
 * frame's first byte (SCM_RIGHTS), and the receiver reads the 4-byte header alone so
 * that the kernel hands it exactly that frame's descriptors. */
#include "sandboxd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* One frame to the supervisor; `fds` ride with its first byte. Empties `m`. */
/* Send iov[0..n) whole (iov[0] the frame's length, filled here), the descriptors with its
 * first byte. */
static int send_iov(struct iovec *iov, int n, const int *fds, int nfds) {
    union { struct cmsghdr h; char buf[CMSG_SPACE(4 * sizeof(int))]; } anc;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    size_t total = 0;
    for (int i = 1; i < n; i++) total += iov[i].iov_len;
    unsigned char *hdr = iov[0].iov_base;
    hdr[0] = (unsigned char)(total >> 24); hdr[1] = (unsigned char)(total >> 16);
    hdr[2] = (unsigned char)(total >> 8); hdr[3] = (unsigned char)total;
    total += 4;
    if (nfds) {
        mh.msg_control = anc.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    }
    size_t done = 0;
    while (done < total) {
        ssize_t r = sendmsg(CTRL_FD, &mh, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        done += (size_t)r;
        mh.msg_control = NULL; /* the descriptors went with the first byte */
        mh.msg_controllen = 0;
        while (mh.msg_iovlen && (size_t)r >= mh.msg_iov->iov_len) {
            r -= (ssize_t)mh.msg_iov->iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen) {
            mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + r;
            mh.msg_iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

int send_frame(struct buf *m, const int *fds, int nfds) {
    unsigned char hdr[4];
    struct iovec iov[2] = {{hdr, 4}, {m->p, m->len}};
    if (send_iov(iov, 2, fds, nfds)) return -1;
    m->len = 0;
    return 0;
}

int send_parts(struct iovec *parts, int n) {
    unsigned char hdr[4];
    struct iovec iov[8];
    if (n > 7) { errno = EINVAL; return -1; }
    iov[0] = (struct iovec){hdr, 4};
    memcpy(iov + 1, parts, (size_t)n * sizeof *parts);
    return send_iov(iov, n + 1, NULL, 0);
}

/* An "error" frame: the supervisor raises SandboxError("{where}: {message}"). */
void send_error(const char *where, const char *message) {
    struct buf m = {0};
    mp_map(&m, 3);
    mp_cstr(&m, "t"); mp_cstr(&m, "error");
    mp_cstr(&m, "where"); mp_cstr(&m, where);
    mp_cstr(&m, "message"); mp_cstr(&m, message);
    send_frame(&m, NULL, 0);
    free(m.p);
}

/* One frame from the supervisor, with up to `maxfds` descriptors (the rest closed).
 * Returns its length, 0 at EOF, -1 on error; the frame is malloc'ed into *out. */
ssize_t recv_frame(unsigned char **out, int *fds, int maxfds, int *nfds) {
    unsigned char hdr[4];
    union { struct cmsghdr h; char buf[CMSG_SPACE(8 * sizeof(int))]; } anc;
    struct iovec iov = {hdr, 4};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = anc.buf, .msg_controllen = sizeof anc.buf};
    ssize_t r;
    do r = recvmsg(CTRL_FD, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
    *nfds = 0;
    for (struct cmsghdr *cm = r > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *got = (int *)CMSG_DATA(cm);
        for (int i = 0; i < n; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = got[i];
            else close(got[i]);
        }
    }
    if (r == 0) return 0;
    if (r != 4) { errno = EPROTO; return -1; }
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len > MAX_FRAME) { errno = E2BIG; return -1; }
    unsigned char *p = malloc(len ? len : 1);
    if (!p) return -1;
    for (size_t done = 0; done < len;) {
        ssize_t k = read(CTRL_FD, p + done, len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) { free(p); errno = k ? errno : EPROTO; return -1; }
        done += (size_t)k;
    }
    *out = p;
    return len ? (ssize_t)len : -1;
}
