// The JS face of the tcp provider's client (TransportConnection in native/index.ts): tcpConnect.
#pragma once

#include <napi.h>

namespace dpms {

// Adds tcpConnect to the exports.
void InitTcpClient(Napi::Env env, Napi::Object exports);

}  // namespace dpms
