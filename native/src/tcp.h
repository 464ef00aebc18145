// The 'tcp' transport provider (see native/index.ts, "Transport providers"): serveTcp / connectTcp.
#pragma once

#include <napi.h>

namespace dpms {

// Adds the provider's exports (tcpServe, tcpConnect, ...) to the addon's exports.
void InitTcp(Napi::Env env, Napi::Object exports);

}  // namespace dpms
