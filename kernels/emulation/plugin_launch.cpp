// The plugin's launcher (topk_memory/topkMemoryLaunch.cu) on the host emulation: linked with
// topkMemoryPlugin.cpp into a plugin library whose enqueue runs the kernels on the CPU, for
// the harness that drives the plugin as TensorRT would (tests/kernels/test_plugin.py).
#include "cuda_host.h"

#include "../topk_memory/topkMemoryLaunch.cu"
