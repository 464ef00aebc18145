// The serving side of the 'verbs' provider: verbsServe(options) -> TransportServer (native/index.ts).
#pragma once

#include <napi.h>

namespace dpms::verbs {

// verbsServe(options): listen with librdmacm on options.host:port and serve the regions (see
// verbs_server.cc). Throws DPMS_UNSUPPORTED when the machine has no RDMA device.
Napi::Value Serve(const Napi::CallbackInfo& info);

}  // namespace dpms::verbs
