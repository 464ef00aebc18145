# Build of the dpms N-API addon (native/src): libpmem mappings, the crash simulator, CRC-32C and the
# native bench loops, the transport providers (tcp, verbs) and their HMAC handshake, and the libfuse3
# low-level binding. C++17 with C++ exceptions (node-addon-api's NAPI_CPP_EXCEPTIONS), -O2, and
# warnings on; links PMDK's libpmem, OpenSSL's libcrypto, rdma-core's libibverbs and librdmacm, and
# libfuse3 (flags from pkg-config fuse3; FUSE_USE_VERSION 35 is the 3.5+ low-level API).
{
  "targets": [
    {
      "target_name": "dpms_native",
      "sources": [
        "src/addon.cc",
        "src/args.cc",
        "src/auth.cc",
        "src/crc32c.cc",
        "src/errors.cc",
        "src/filelock.cc",
        "src/fuse.cc",
        "src/fuse_loop.cc",
        "src/mapping.cc",
        "src/pool.cc",
        "src/sim.cc",
        "src/sysinfo.cc",
        "src/tcp.cc",
        "src/tcp_args.cc",
        "src/tcp_bench.cc",
        "src/tcp_buffers.cc",
        "src/tcp_client.cc",
        "src/tcp_client_core.cc",
        "src/tcp_server.cc",
        "src/tcp_server_loop.cc",
        "src/tcp_socket.cc",
        "src/verbs.cc",
        "src/verbs_client.cc",
        "src/verbs_common.cc",
        "src/verbs_server.cc"
      ],
      "include_dirs": [
        "<!@(node -p \"require('node-addon-api').include\")",
        "<!@(pkg-config --cflags-only-I fuse3 | sed 's/-I//g')"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED",
                  "FUSE_USE_VERSION=35", "_FILE_OFFSET_BITS=64"],
      # Node's common.gypi defaults to -O3 and -fno-exceptions; replace them.
      "cflags!": ["-O3", "-fno-exceptions"],
      "cflags_cc!": ["-O3", "-fno-exceptions", "-std=gnu++17"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "cflags_cc": ["-O2", "-std=c++17", "-fexceptions", "-Wall", "-Wextra"],
      "libraries": ["-lpmem", "-lcrypto", "-libverbs", "-lrdmacm", "<!@(pkg-config --libs fuse3)", "-lpthread"]
    }
  ]
}
