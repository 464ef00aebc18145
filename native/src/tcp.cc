// The 'tcp' transport provider: software RDMA over TCP (native/index.ts, "Transport providers").
//
//   tcp_wire.h         the frame format (docs/TCP-WIRE.md)
//   tcp_server_loop.*  the serving thread: epoll, handshake, one-sided operations on the regions
//   tcp_server.cc      tcpServe and the TransportServer object (events through a ThreadSafeFunction)
//   tcp_client_core.*  the client on the caller's libuv loop (uv_poll + uv_prepare/uv_check batching)
//   tcp_client.cc      tcpConnect and the TransportConnection object
//   tcp_buffers.*      recycled blocks for large READ results (no page faults per read)
//   tcp_bench.cc       rawTcpBench, the plain-TCP limit the provider is compared with
//   tcp_socket.*, tcp_args.*  socket and argument helpers
//
// Remote persistence (persist(region, offset, length, rkey)): the client sends a PERSIST frame on the
// same connection as its writes. The serving thread executes each connection's frames strictly in
// order, and a WRITE's payload is copied into the region before the next frame is looked at, so when
// PERSIST runs every earlier write of that connection is in the region's memory. PERSIST then calls
// Region::persist(offset, length): a CPU cache flush of the range plus a store fence (libpmem's
// pmem_persist) on PM or tmpfs, msync on a block-backed file, the simulator's flush + drain for a
// SimMapping. The response is sent only after that returns, so a resolved persist() means the range
// is durable on the serving node. A failed msync answers with an I/O status (DPMS_IO to the caller);
// the connection stays up. Caveat: a served SimMapping is flushed from the serving thread; JS must not
// flush or drain that same simulator concurrently (the simulator is single-threaded).
#include "tcp.h"

#include "tcp_bench.h"
#include "tcp_client.h"
#include "tcp_server.h"

namespace dpms {

void InitTcp(Napi::Env env, Napi::Object exports) {
  InitTcpServer(env, exports);
  InitTcpClient(env, exports);
  InitTcpBench(env, exports);
}

}  // namespace dpms
