/* ipc make|look KEY: IPC objects that a job could try to leave for the next one.
 *
 *   make KEY   create a SysV shared memory segment, semaphore set and message queue
 *              under the numeric KEY (and one message in the queue), and the POSIX
 *              message queue "/sandboxd-KEY"; print "made shm sem msg mq"
 *   look KEY   look each of them up without creating it; print "found NAME" or
 *              "absent NAME" per object, then every line of /proc/sysvipc/{shm,sem,msg}
 *              after its header, prefixed with "sysvipc "
 * Exit status 0; the test reads the output.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

static void list(const char *kind) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/sysvipc/%s", kind);
    FILE *f = fopen(path, "r");
    if (!f) return;
    int first = 1;
    while (fgets(line, sizeof line, f)) {
        if (!first) printf("sysvipc %s %s", kind, line);
        first = 0;
    }
    fclose(f);
}

static void report(const char *name, int ok) {
    printf("%s %s%s%s\n", ok ? "found" : "absent", name, ok ? "" : " errno=",
           ok ? "" : strerrorname_np(errno));
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: ipc make|look KEY\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    char mqname[64];
    snprintf(mqname, sizeof mqname, "/sandboxd-%s", argv[2]);
    if (!strcmp(argv[1], "make")) {
        int shm = shmget(key, 1 << 16, IPC_CREAT | 0666);
        int sem = semget(key, 1, IPC_CREAT | 0666);
        int msg = msgget(key, IPC_CREAT | 0666);
        struct { long type; char text[8]; } m = {1, "hello"};
        if (msg >= 0) msgsnd(msg, &m, sizeof m.text, IPC_NOWAIT);
        mqd_t mq = mq_open(mqname, O_CREAT | O_RDWR, 0666, NULL);
        if (mq != (mqd_t)-1) mq_send(mq, "hello", 5, 0);
        int mq_errno = errno;
        printf("made%s%s%s%s", shm >= 0 ? " shm" : "", sem >= 0 ? " sem" : "",
               msg >= 0 ? " msg" : "", mq != (mqd_t)-1 ? " mq" : "");
        if (mq == (mqd_t)-1) printf(" (mq_open: %s)", strerrorname_np(mq_errno));
        printf("\n");
        return 0;
    }
    report("shm", shmget(key, 0, 0) >= 0);
    report("sem", semget(key, 0, 0) >= 0);
    report("msg", msgget(key, 0) >= 0);
    report("mq", mq_open(mqname, O_RDONLY) != (mqd_t)-1);
    list("shm");
    list("sem");
    list("msg");
    return 0;
}
