// The libfuse3 low-level binding (native/fuse.ts is its typed face): fuseMount mounts a file system whose
// requests are answered by JavaScript. fuse_loop.* is the libfuse side, fuse.cc the JavaScript side.
#pragma once

#include <napi.h>

namespace dpms {

// Adds fuseMount to the addon's exports.
void InitFuse(Napi::Env env, Napi::Object exports);

}  // namespace dpms
