/* consumer.c with an AOT kernel: installed.h and its object come from the installed attnc. */
#define CONSUMER_AOT 1
#include "installed.h"

#include "consumer.c"
