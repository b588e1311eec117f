/* log.c -- see log.h. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"
#include "tfps.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int tfps_log_min_level = TFPS_LOG_INFO;
static char log_role = 'T';
static int log_index = 0;
static pthread_mutex_t last_error_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_error[1024];   /* the last error line's message (tfps_log_last_error) */

void tfps_log_set_role(char role, int index) {
    log_role = role;
    log_index = index;
}

int tfps_log_level_from_name(const char *name, int *out) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = i;
            return TFPS_OK;
        }
    return TFPS_ERR;
}

void tfps_log_last_error(char *buf, size_t n) {
    if (!n) return;
    pthread_mutex_lock(&last_error_mu);
    snprintf(buf, n, "%s", last_error);
    pthread_mutex_unlock(&last_error_mu);
}

void tfps_log_raw(int level, const char *fmt, ...) {
    char msg[1024], stamp[64];
    struct timeval tv;
    struct tm tm;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One line per message, whatever a client sent: a newline, carriage
     * return or terminal escape in a name or reason cannot forge a line. */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    if (level == TFPS_LOG_ERROR) {
        pthread_mutex_lock(&last_error_mu);
        snprintf(last_error, sizeof(last_error), "%s", msg);
        pthread_mutex_unlock(&last_error_mu);
    }
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    size_t off = strftime(stamp, sizeof(stamp), "%d %b %H:%M:%S", &tm);
    snprintf(stamp + off, sizeof(stamp) - off, ".%03d", (int)(tv.tv_usec / 1000));
    /* One fprintf per line so lines from threads do not interleave mid-line. */
    fprintf(stderr, "%d:%c%d %s %c %s\n", (int)getpid(), log_role, log_index, stamp, "DIWE"[level & 3], msg);
}
