// The 'verbs' transport provider (native/index.ts, "Transport providers"): real RDMA through
// rdma-core's libibverbs and librdmacm. The server lives in verbs_server.cc, the client in
// verbs_client.cc, the framing and helpers they share in verbs_common.cc; docs/VERBS.md explains
// how the contract maps onto queue pairs, memory regions and rkeys. On a machine without an RDMA
// device both entry points fail with DPMS_UNSUPPORTED ("no RDMA device") instead of crashing.
#include "verbs.h"

#include "verbs_client.h"
#include "verbs_server.h"

namespace dpms {

void InitVerbs(Napi::Env env, Napi::Object exports) {
  exports.Set("verbsServe", Napi::Function::New(env, verbs::Serve, "verbsServe"));
  exports.Set("verbsConnect", Napi::Function::New(env, verbs::Connect, "verbsConnect"));
}

}  // namespace dpms
