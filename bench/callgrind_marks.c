/* Callgrind client request for bench/instructions.py, called through ctypes: valgrind runs the
 * interpreter uninstrumented (--instr-atstart=no, about 10x faster) through the imports, the policy
 * compilation and the warm-up, and this starts instrumenting once they are done. What is counted
 * is still only the inside of operator.call (--toggle-collect). */
#include <valgrind/callgrind.h>

void podgraft_start_instrumentation(void) { CALLGRIND_START_INSTRUMENTATION; }
