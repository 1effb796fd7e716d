/* foreign_arch MODE: make getpid through a foreign system call ABI.
 *
 *   i386   int $0x80 with eax = 20 (getpid in the i386 table)
 *   x32    syscall(__X32_SYSCALL_BIT | 39) (getpid in the x32 table)
 *   native syscall(39), the control
 * Output: "ret=R" (R is the raw return: a pid or -errno). Under a filter that
 * refuses the ABI the process never prints: it is killed (SIGSYS) or gets ENOSYS.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define X32_SYSCALL_BIT 0x40000000L

int main(int argc, char **argv) {
    long ret;
    if (argc != 2) return 2;
    fflush(stdout);
    if (strcmp(argv[1], "i386") == 0) {
        /* The compat entry zeroes r8-r15; tell the compiler they are clobbered. */
        __asm__ volatile("int $0x80"
                         : "=a"(ret)
                         : "a"(20L)
                         : "memory", "cc", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15");
    } else if (strcmp(argv[1], "x32") == 0) {
        __asm__ volatile("syscall"
                         : "=a"(ret)
                         : "a"(X32_SYSCALL_BIT | 39L)
                         : "memory", "cc", "rcx", "r11");
    } else if (strcmp(argv[1], "native") == 0) {
        __asm__ volatile("syscall" : "=a"(ret) : "a"(39L) : "memory", "cc", "rcx", "r11");
    } else {
        return 2;
    }
    printf("ret=%ld\n", ret);
    return 0;
}
