/* check.h — the assertion of the self-checking test programs: EXPECT(cond) reports the file,
 * the line and the condition that failed, and counts it in check_failures (the program's exit
 * status comes from it). */
#ifndef ATTNC_TESTS_CHECK_H
#define ATTNC_TESTS_CHECK_H

#include <stdio.h>

static int check_failures;

#define EXPECT(cond)                                                            \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                   \
        }                                                                       \
    } while (0)

#endif
