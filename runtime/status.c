/* status.c — status names and the error record helpers. */
#include <stdarg.h>
#include <stdio.h>

#include "rt_internal.h"

const char *attn_status_name(attn_status s) {
    switch (s) {
    case ATTN_OK: return "ATTN_OK";
    case ATTN_ERR_NULL: return "ATTN_ERR_NULL";
    case ATTN_ERR_RANK: return "ATTN_ERR_RANK";
    case ATTN_ERR_SHAPE: return "ATTN_ERR_SHAPE";
    case ATTN_ERR_STRIDE: return "ATTN_ERR_STRIDE";
    case ATTN_ERR_OVERFLOW: return "ATTN_ERR_OVERFLOW";
    case ATTN_ERR_OFFSET: return "ATTN_ERR_OFFSET";
    case ATTN_ERR_INPUT: return "ATTN_ERR_INPUT";
    case ATTN_ERR_INDEX: return "ATTN_ERR_INDEX";
    case ATTN_ERR_SPEC: return "ATTN_ERR_SPEC";
    case ATTN_ERR_COMPILE: return "ATTN_ERR_COMPILE";
    case ATTN_ERR_NOMEM: return "ATTN_ERR_NOMEM";
    case ATTN_ERR_IO: return "ATTN_ERR_IO";
    case ATTN_ERR_ARG: return "ATTN_ERR_ARG";
    case ATTN_ERR_DTYPE: return "ATTN_ERR_DTYPE";
    }
    return "ATTN_ERR_UNKNOWN";
}

attn_status rt_error(attn_error *err, attn_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

attn_status rt_ok(attn_error *err) {
    if (err) {
        err->code = ATTN_OK;
        err->message[0] = '\0';
    }
    return ATTN_OK;
}
