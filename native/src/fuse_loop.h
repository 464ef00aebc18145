// The libfuse side of the FUSE binding (fuse.cc is the JavaScript side, native/fuse.ts the typed face):
// one low-level libfuse3 session, mounted, with one thread reading the kernel's requests. Every request
// becomes a fuse::Request handed to a sink that queues it for JavaScript without waiting, so the thread
// goes straight back to reading; the answer is sent later from the JavaScript thread with fuse_reply_*
// (libfuse's replies are thread-safe). Nothing here blocks on JavaScript, unlike fuse-native, whose
// request threads wait for the handler.
#pragma once

#include <fuse_lowlevel.h>

#include <cstdint>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <utility>
#include <vector>

namespace dpms::fuse {

// Operation numbers, shared with native/fuse.ts (FuseOp there): keep both lists in step.
enum class Op : uint32_t {
  kInit = 0,
  kLookup = 1,
  kForget = 2,  // forget and forget_multi: already answered (fuse_reply_none) when JS hears of them
  kGetattr = 3,
  kSetattr = 4,
  kReadlink = 5,
  kMknod = 6,
  kMkdir = 7,
  kUnlink = 8,
  kRmdir = 9,
  kSymlink = 10,
  kRename = 11,
  kLink = 12,
  kOpen = 13,
  kRead = 14,
  kWrite = 15,
  kFlush = 16,
  kRelease = 17,
  kFsync = 18,
  kOpendir = 19,
  kReaddir = 20,
  kReleasedir = 21,
  kFsyncdir = 22,
  kStatfs = 23,
  kSetxattr = 24,
  kGetxattr = 25,
  kListxattr = 26,
  kRemovexattr = 27,
  kAccess = 28,
  kCreate = 29,
  kEnd = 30,  // the loop thread has ended (its last event); `error` is 0 or the errno that ended it
};

constexpr uint32_t Bit(Op op) { return 1u << static_cast<uint32_t>(op); }

// The largest write the kernel may send: libfuse reads each request into a buffer of
// FUSE_MAX_MAX_PAGES (256) pages plus a header, so 1 MiB is the ceiling whatever -o max_write asks.
constexpr unsigned kMaxWriteBytes = 1u << 20;

// One kernel request, everything copied out of libfuse's receive buffer (the next request overwrites
// it). Which fields are set depends on `op` (see native/fuse.ts for the arguments JS receives).
struct Request {
  Op op = Op::kEnd;
  fuse_req_t req = nullptr;  // null for kInit, kForget and kEnd, which need no answer
  uint32_t uid = 0, gid = 0, pid = 0, umask = 0;
  uint64_t ino = 0;      // the inode, or the parent directory for name operations
  uint64_t newParent = 0;
  uint64_t fh = 0;
  bool hasFh = false;
  uint64_t size = 0;     // read / readdir / getxattr / listxattr: the most the kernel takes
  uint64_t offset = 0;
  uint32_t mode = 0, rdev = 0, mask = 0, renameFlags = 0;
  int flags = 0;         // open flags (open, opendir, create, release, write) or setxattr flags
  bool datasync = false;
  std::string name;      // the entry name, xattr name
  std::string newName;   // rename / link target name; symlink: the link's target
  std::unique_ptr<uint8_t[]> data;  // write data, setxattr value
  size_t dataLength = 0;
  int toSet = 0;         // setattr: FUSE_SET_ATTR_* bits
  struct stat attr {};   // setattr: the new values
  std::vector<std::pair<uint64_t, uint64_t>> forgets;  // (ino, nlookup)
  int error = 0;         // kEnd
};

// Receives every Request (ownership passes). Called on the loop thread; must not block.
using Sink = void (*)(void* context, Request* request);

struct MountConfig {
  std::string mountpoint;
  std::vector<std::string> options;  // each passed as `-o option`
  uint32_t implemented = 0;          // Bit(op) for every op JS handles; the others get libfuse's default
};

class Loop {
 public:
  enum class MountError { kNone, kBadOption, kMount, kSystem };

  // Create the session and mount it. On failure returns null, with the kind and libfuse's own message.
  static std::unique_ptr<Loop> Mount(const MountConfig& config, Sink sink, void* sinkContext, MountError* kind,
                                     std::string* error);

  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Start the loop thread (once).
  bool Start(std::string* error);

  // Ask the loop thread to end: fuse_session_exit and a wake-up of its poll. Returns at once; idempotent.
  void RequestStop();

  // RequestStop, wait for the thread, then unmount (unless the kernel already did) and close the
  // device. Bounded: the thread never waits for anything but its poll. Idempotent.
  void StopAndUnmount();

  // Free the session (after StopAndUnmount, and after every request still held has been freed with
  // fuse_reply_none: libfuse does not free them). Idempotent.
  void Destroy();

  // libfuse's hooks call these on the loop thread.
  void Deliver(Request* request) { sink_(sinkContext_, request); }
  void OnInit(fuse_conn_info* conn);

 private:
  Loop(Sink sink, void* sinkContext) : sink_(sink), sinkContext_(sinkContext) {}
  void Run();

  Sink sink_;
  void* sinkContext_;
  fuse_session* session_ = nullptr;
  fuse_conn_info_opts* connOptions_ = nullptr;  // -o max_write=..., -o writeback_cache, ... (applied in init)
  bool mounted_ = false;
  int fuseFd_ = -1;
  int wakeFd_ = -1;
  std::thread thread_;
  std::unique_ptr<Request> endRequest_;  // allocated up front: the end must always be reported
};

// Route libfuse's log messages through our logger (stderr, and remembered for mount errors). Once per process.
void InstallLogger();

}  // namespace dpms::fuse
