/* service.h -- the tfps.v1.ParameterServer methods: ONE list.
 *
 * TFPS_METHODS(X) expands X(ENUM, Name, name) once per method, in the order
 * of proto/tfps_service.proto (test_ps_handlers checks the .proto against
 * it). The enum, the method paths and the ps's handler table are all made
 * from it, so a method is added in one place. */
#ifndef TFPS_SERVICE_H
#define TFPS_SERVICE_H

#define TFPS_METHODS(X)                                                                                           \
    X(REGISTER, Register, register)                                                                              \
    X(PULL, Pull, pull)                                                                                          \
    X(PUSH, Push, push)                                                                                          \
    X(HEARTBEAT, Heartbeat, heartbeat)                                                                           \
    X(STATUS, Status, status)                                                                                    \
    X(SHUTDOWN, Shutdown, shutdown)                                                                              \
    X(CHECKPOINT, Checkpoint, checkpoint)                                                                        \
    X(PUSHPULL, PushPull, pushpull)

typedef enum {
#define TFPS_METHOD_ENUM(E, N, n) TFPS_M_##E,
    TFPS_METHODS(TFPS_METHOD_ENUM)
#undef TFPS_METHOD_ENUM
    TFPS_M_COUNT
} tfps_method;

#define TFPS_SERVICE_NAME "tfps.v1.ParameterServer"

static const char *const tfps_method_paths[TFPS_M_COUNT] = {
#define TFPS_METHOD_PATH(E, N, n) "/" TFPS_SERVICE_NAME "/" #N,
    TFPS_METHODS(TFPS_METHOD_PATH)
#undef TFPS_METHOD_PATH
};

/* Worker ids: training replica of rank r is r + 1 (0 means "not registered");
 * the evaluator, which may pull but never push, is TFPS_OBSERVER_ID. */
#define TFPS_OBSERVER_ID 100000u

#endif
