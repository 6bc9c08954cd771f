/* The native module's kernel as one translation unit, compiled with the module's flags for the emulator run. */
#include "meter_kernel_core.h"
