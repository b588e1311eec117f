/* cli.h -- the command line of the tools (tfps-predict, tfps-status): a few
 * flags of their own plus a chosen few of the daemons' options.
 *
 * The daemons' options (--device, --tls-cert, --log-level, ...) are parsed by
 * options.h's own code over its defaults and environment variables, so a
 * value, its TFPS_* variable and the message for a bad one are exactly the
 * daemons'. A tool lists which of them it takes; any other flag is an error,
 * so `tfps-predict --batch-size 8` is refused instead of silently ignored.
 *
 *     --name VALUE | --name=VALUE    a flag of the tool's, or one of `shared`
 *     --name                         a switch of the tool's (--json)
 *     --help, -h, --version          into o->help, o->version
 *     anything else not starting -   positional (a lone "-" too); "--" ends flags */
#ifndef TFPS_CLI_H
#define TFPS_CLI_H

#include "options.h"

#include <stddef.h>

typedef struct {
    const char *name;     /* without "--" */
    const char **value;   /* a flag with a value: where its text goes (argv's string); NULL: a switch */
    int *set;             /* set to 1 when given (a switch needs it); may be NULL for a flag with a value */
} tfps_cli_flag;

/* Parses argv[1..argc) as above: own[0..nown) flags, the options named in
 * shared (NULL-terminated names without "--") into *o over defaults and the
 * environment, positional arguments into pos[0..*npos) (argv's strings, at
 * most maxpos). The log level is quiet_level unless --log-level or
 * TFPS_LOG_LEVEL says otherwise (a tool's stdout is its result; its stderr
 * should hold only what went wrong). Returns TFPS_OK, or TFPS_ERR with one
 * line in err naming the flag, the value and what was expected. */
int tfps_cli_parse(int argc, char **argv, const tfps_cli_flag *own, int nown, const char *const *shared,
                   int quiet_level, tfps_options *o, const char **pos, int maxpos, int *npos, char *err,
                   size_t errlen);

#endif
