/* log.h -- one line per event, redis style:
 *
 *     12345:W0 22 Nov 03:25:01.123 I message
 *     ^pid  ^role letter + task index   ^level letter (D I W E)
 *
 * Role letters: P ps, W worker, C chief, E evaluator, L local (single
 * process), T tools/tests. Lines go to stderr. The level check happens in the
 * macro, so a filtered debug line costs one comparison. */
#ifndef TFPS_LOG_H
#define TFPS_LOG_H

#include <stddef.h>

typedef enum { TFPS_LOG_DEBUG = 0, TFPS_LOG_INFO, TFPS_LOG_WARN, TFPS_LOG_ERROR } tfps_log_level;

extern int tfps_log_min_level;

void tfps_log_set_role(char role, int index);
/* Parses "debug|info|warn|error"; returns TFPS_OK/TFPS_ERR. */
int tfps_log_level_from_name(const char *name, int *out);
void tfps_log_raw(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The message of the last error line this process logged, as logged (one
 * line, control characters replaced), into buf (n bytes, truncated to fit);
 * "" when none. For a task that ends in error and must tell others why (the
 * chief's Shutdown reason to the ps). Safe from any thread. */
void tfps_log_last_error(char *buf, size_t n);

#define tfps_log(level, ...)                                                   \
    do {                                                                       \
        if ((level) >= tfps_log_min_level) tfps_log_raw((level), __VA_ARGS__); \
    } while (0)
#define tfps_debug(...) tfps_log(TFPS_LOG_DEBUG, __VA_ARGS__)
#define tfps_info(...) tfps_log(TFPS_LOG_INFO, __VA_ARGS__)
#define tfps_warn(...) tfps_log(TFPS_LOG_WARN, __VA_ARGS__)
#define tfps_error(...) tfps_log(TFPS_LOG_ERROR, __VA_ARGS__)

#endif
