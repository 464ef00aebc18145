// The 'tcp' transport provider (see native/index.ts, "Transport providers"): tcpServe, tcpConnect, and
// rawTcpBench, the plain-TCP baseline it is measured against. tcp.cc lists the files it is made of.
#pragma once

#include <napi.h>

namespace dpms {

// Adds tcpServe, tcpConnect and rawTcpBench to the addon's exports.
void InitTcp(Napi::Env env, Napi::Object exports);

}  // namespace dpms
