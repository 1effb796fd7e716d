/* foreign_arch MODE: make getpid through a foreign system call ABI.
 *
 *   i386         int $0x80 with eax = 20 (getpid in the i386 table)
 *   x32          syscall(__X32_SYSCALL_BIT | 39) (getpid in the x32 table)
 *   native       syscall(39), the control
 *   thread-i386  the i386 call from a second thread, while main waits to print "survived":
 *                tells "kill the process" from "kill the thread"
 * Output: "ret=R" (R is the raw return: a pid or -errno). Under a filter that
 * refuses the ABI the process never prints: it is killed (SIGSYS) or gets ENOSYS.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define X32_SYSCALL_BIT 0x40000000L

static long i386_getpid(void) {
    long ret;
    /* The compat entry zeroes r8-r15; tell the compiler they are clobbered. */
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(20L)
                     : "memory", "cc", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15");
    return ret;
}

static void *thread_main(void *arg) {
    *(long *)arg = i386_getpid();
    return NULL;
}

int main(int argc, char **argv) {
    long ret;
    if (argc != 2) return 2;
    fflush(stdout);
    if (strcmp(argv[1], "i386") == 0) {
        ret = i386_getpid();
    } else if (strcmp(argv[1], "x32") == 0) {
        __asm__ volatile("syscall"
                         : "=a"(ret)
                         : "a"(X32_SYSCALL_BIT | 39L)
                         : "memory", "cc", "rcx", "r11");
    } else if (strcmp(argv[1], "native") == 0) {
        __asm__ volatile("syscall" : "=a"(ret) : "a"(39L) : "memory", "cc", "rcx", "r11");
    } else if (strcmp(argv[1], "thread-i386") == 0) {
        pthread_t t;
        ret = 0;
        if (pthread_create(&t, NULL, thread_main, &ret) != 0) return 3;
        sleep(2); /* a killed thread is never joinable: wait instead, then report */
        printf("survived\n");
        return 0;
    } else {
        return 2;
    }
    printf("ret=%ld\n", ret);
    return 0;
}
