/* core/status.c: thread-local error messages (status.h). */
#include <stdio.h>

#include "lunar/status.h"

static _Thread_local char err_msg[2048];
static _Thread_local lunar_status err_status;

lunar_status lunar_error(lunar_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    err_status = status;
    return status;
}

const char *lunar_last_error(void) { return err_msg; }
lunar_status lunar_last_status(void) { return err_status; }
void lunar_clear_error(void) { err_msg[0] = 0; err_status = LUNAR_OK; }

const char *lunar_status_name(lunar_status s) {
    switch (s) {
    case LUNAR_OK: return "ok";
    case LUNAR_ERR_ARG: return "bad argument";
    case LUNAR_ERR_SHAPE: return "shape mismatch";
    case LUNAR_ERR_DTYPE: return "bad dtype";
    case LUNAR_ERR_OOM: return "out of memory";
    case LUNAR_ERR_IO: return "i/o error";
    case LUNAR_ERR_FORMAT: return "bad format";
    case LUNAR_ERR_DEVICE: return "no such device";
    case LUNAR_ERR_NUMERIC: return "non-finite value";
    }
    return "unknown error";
}
