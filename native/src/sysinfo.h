#pragma once
#include <napi.h>

namespace dpms {
// rdmaDevices() and pmemInfo(path): the environment facts `dpms doctor` reports.
void InitSysInfo(Napi::Env env, Napi::Object exports);
}
