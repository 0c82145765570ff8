/*
 * lunar/status.h: error reporting for liblunar.
 *
 * No function in liblunar exits or aborts on bad input (DESIGN.md). A failing
 * function returns a lunar_status (or NULL) and leaves a human-readable message
 * in a thread-local buffer that names the problem: the op, the shapes, the file.
 * The Lua bindings turn that message into a Lua error.
 */
#ifndef LUNAR_STATUS_H
#define LUNAR_STATUS_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LUNAR_OK = 0,
    LUNAR_ERR_ARG,      /* an argument out of range or of the wrong kind */
    LUNAR_ERR_SHAPE,    /* shapes that do not fit together */
    LUNAR_ERR_DTYPE,    /* a dtype the op does not take */
    LUNAR_ERR_OOM,      /* allocation failed */
    LUNAR_ERR_IO,       /* a file could not be opened, read or written */
    LUNAR_ERR_FORMAT,   /* a file whose content is not what its format says */
    LUNAR_ERR_DEVICE,   /* a device that is not there */
    LUNAR_ERR_NUMERIC,  /* NaN or infinity where a finite number is required */
} lunar_status;

/* Records `status` with a printf-style message for the calling thread and
 * returns `status`, so a failing function can `return lunar_error(...)`. */
lunar_status lunar_error(lunar_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message of the calling thread's last error ("" when none). */
const char *lunar_last_error(void);

/* The status of the calling thread's last error (LUNAR_OK when none). */
lunar_status lunar_last_status(void);

/* Clears the calling thread's error. */
void lunar_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
