// The JS face of the tcp provider's server (TransportServer in native/index.ts): tcpServe(options)
// checks the options, listens, pins the regions and starts the serving thread (tcp_server_loop.h),
// whose events reach onEvent through a ThreadSafeFunction.
#pragma once

#include <napi.h>

namespace dpms {

// Adds tcpServe to the exports.
void InitTcpServer(Napi::Env env, Napi::Object exports);

}  // namespace dpms
