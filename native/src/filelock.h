#pragma once
#include <napi.h>

namespace dpms {
void InitFileLock(Napi::Env env, Napi::Object exports);
}
