// The raw TCP baseline for `dpms bench transport` (rawTcpBench): see tcp_bench.cc.
#pragma once

#include <napi.h>

namespace dpms {

// Adds rawTcpBench to the exports.
void InitTcpBench(Napi::Env env, Napi::Object exports);

}  // namespace dpms
