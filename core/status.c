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
