/* forkbomb SECONDS: fork without end for at most SECONDS, then every process exits.
 * Bounded in time (each process checks the clock) so that a broken sandbox cannot take
 * the machine down; run only under a pids limit. Prints nothing; exits 0. */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    time_t end = time(NULL) + (time_t)secs + 1;
    int forks = 0;
    while (time(NULL) < end && forks < 100000) {
        if (fork() >= 0) forks++;
        else usleep(1000);
    }
    return 0;
}
