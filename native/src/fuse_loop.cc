// The libfuse side of the FUSE binding (see fuse_loop.h): the low-level operation table, the session's
// mount and capability choices, and the loop thread.
//
// The loop is our own poll loop over fuse_session_receive_buf / fuse_session_process_buf (the public
// custom-loop API) rather than fuse_session_loop, so that unmount() can end it: a thread blocked in
// read(2) on /dev/fuse only wakes when the connection is aborted, which a lazy unmount with files still
// open never does, and closing the descriptor under a reading thread races with the reuse of its number.
// Here the device is non-blocking, the thread polls it together with an eventfd, and stopping is
// fuse_session_exit + a write to the eventfd, then join, and only then fuse_session_unmount.
#include "fuse_loop.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <system_error>

namespace dpms::fuse {

namespace {

constexpr uint64_t kMaxSafeInteger = 1ull << 53;  // JS numbers carry inodes, handles, offsets and sizes
constexpr size_t kMaxLogBytes = 4096;

// libfuse's messages on this thread since the mount began (mount errors are reported with them).
thread_local std::string threadLog;

void LogMessage(enum fuse_log_level level, const char* format, va_list args) {
  (void)level;
  char line[1024];
  va_list copy;
  va_copy(copy, args);
  std::vsnprintf(line, sizeof line, format, copy);
  va_end(copy);
  std::fputs(line, stderr);  // what libfuse's default logger does
  if (threadLog.size() < kMaxLogBytes) threadLog += line;
}

Loop* LoopOf(fuse_req_t req) { return static_cast<Loop*>(fuse_req_userdata(req)); }

// Build the Request for one kernel request and hand it on. `fill` copies the arguments out and returns
// false when it has answered the request itself (an argument JS cannot represent). Nothing may unwind
// into libfuse's C frames, so a failed allocation answers ENOMEM.
template <typename Fill>
void Handle(fuse_req_t req, Op op, fuse_ino_t ino, Fill fill) noexcept {
  Request* request = nullptr;
  try {
    auto owned = std::make_unique<Request>();
    owned->op = op;
    owned->req = req;
    owned->ino = ino;
    const fuse_ctx* ctx = fuse_req_ctx(req);
    owned->uid = ctx->uid;
    owned->gid = ctx->gid;
    owned->pid = static_cast<uint32_t>(ctx->pid);
    owned->umask = ctx->umask;
    if (!fill(*owned)) return;
    request = owned.release();
  } catch (...) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  LoopOf(req)->Deliver(request);
}

void SetFh(Request& r, const fuse_file_info* fi) {
  if (fi != nullptr) {
    r.fh = fi->fh;
    r.hasFh = true;
  }
}

// Copy `length` bytes into the request's data (write payloads, xattr values).
void CopyData(Request& r, const char* bytes, size_t length) {
  r.dataLength = length;
  if (length == 0) return;
  r.data.reset(new uint8_t[length]);
  std::memcpy(r.data.get(), bytes, length);
}

void OnInitHook(void* userdata, fuse_conn_info* conn) { static_cast<Loop*>(userdata)->OnInit(conn); }

void OnLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Handle(req, Op::kLookup, parent, [&](Request& r) { r.name = name; return true; });
}

// A forget needs no answer and the kernel does not wait for one: answer now, then tell JS.
void DeliverForgets(fuse_req_t req, const fuse_forget_data* forgets, size_t count) noexcept {
  Loop* loop = LoopOf(req);
  fuse_reply_none(req);
  try {
    auto request = std::make_unique<Request>();
    request->op = Op::kForget;
    request->forgets.reserve(count);
    for (size_t i = 0; i < count; ++i) request->forgets.emplace_back(forgets[i].ino, forgets[i].nlookup);
    loop->Deliver(request.release());
  } catch (...) {
    // Out of memory: JS keeps a lookup count too high, which only delays freeing an inode.
  }
}

void OnForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  const fuse_forget_data one = {ino, nlookup};
  DeliverForgets(req, &one, 1);
}

void OnForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) { DeliverForgets(req, forgets, count); }

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Handle(req, Op::kGetattr, ino, [&](Request& r) { SetFh(r, fi); return true; });
}

void OnSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int toSet, fuse_file_info* fi) {
  Handle(req, Op::kSetattr, ino, [&](Request& r) {
    if ((toSet & FUSE_SET_ATTR_SIZE) != 0 &&
        (attr->st_size < 0 || static_cast<uint64_t>(attr->st_size) > kMaxSafeInteger)) {
      fuse_reply_err(req, EFBIG);
      return false;
    }
    r.toSet = toSet;
    r.attr = *attr;
    SetFh(r, fi);
    return true;
  });
}

void OnReadlink(fuse_req_t req, fuse_ino_t ino) {
  Handle(req, Op::kReadlink, ino, [](Request&) { return true; });
}

void OnMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  Handle(req, Op::kMknod, parent, [&](Request& r) {
    r.name = name;
    r.mode = mode;
    r.rdev = static_cast<uint32_t>(rdev);
    return true;
  });
}

void OnMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Handle(req, Op::kMkdir, parent, [&](Request& r) {
    r.name = name;
    r.mode = mode;
    return true;
  });
}

void OnUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Handle(req, Op::kUnlink, parent, [&](Request& r) { r.name = name; return true; });
}

void OnRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Handle(req, Op::kRmdir, parent, [&](Request& r) { r.name = name; return true; });
}

void OnSymlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  Handle(req, Op::kSymlink, parent, [&](Request& r) {
    r.name = name;
    r.newName = target;
    return true;
  });
}

void OnRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newParent, const char* newName,
              unsigned int flags) {
  Handle(req, Op::kRename, parent, [&](Request& r) {
    r.name = name;
    r.newParent = newParent;
    r.newName = newName;
    r.renameFlags = flags;
    return true;
  });
}

void OnLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newParent, const char* newName) {
  Handle(req, Op::kLink, ino, [&](Request& r) {
    r.newParent = newParent;
    r.newName = newName;
    return true;
  });
}

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Handle(req, Op::kOpen, ino, [&](Request& r) { r.flags = fi->flags; return true; });
}

void OnRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
  Handle(req, Op::kRead, ino, [&](Request& r) {
    if (offset < 0) {
      fuse_reply_err(req, EINVAL);
      return false;
    }
    if (static_cast<uint64_t>(offset) > kMaxSafeInteger) {  // beyond any file JS can hold: end of file
      fuse_reply_buf(req, nullptr, 0);
      return false;
    }
    SetFh(r, fi);
    r.size = size;
    r.offset = static_cast<uint64_t>(offset);
    return true;
  });
}

void OnWrite(fuse_req_t req, fuse_ino_t ino, const char* bytes, size_t size, off_t offset, fuse_file_info* fi) {
  Handle(req, Op::kWrite, ino, [&](Request& r) {
    if (offset < 0 || static_cast<uint64_t>(offset) > kMaxSafeInteger - size) {
      fuse_reply_err(req, EFBIG);
      return false;
    }
    SetFh(r, fi);
    r.offset = static_cast<uint64_t>(offset);
    r.flags = fi->flags;
    CopyData(r, bytes, size);
    return true;
  });
}

void OnFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Handle(req, Op::kFlush, ino, [&](Request& r) { SetFh(r, fi); return true; });
}

void OnRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Handle(req, Op::kRelease, ino, [&](Request& r) {
    SetFh(r, fi);
    r.flags = fi->flags;
    return true;
  });
}

void OnFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  Handle(req, Op::kFsync, ino, [&](Request& r) {
    SetFh(r, fi);
    r.datasync = datasync != 0;
    return true;
  });
}

void OnOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Handle(req, Op::kOpendir, ino, [&](Request& r) { r.flags = fi->flags; return true; });
}

void OnReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
  Handle(req, Op::kReaddir, ino, [&](Request& r) {
    if (offset < 0 || static_cast<uint64_t>(offset) > kMaxSafeInteger) {  // not a position we handed out
      fuse_reply_buf(req, nullptr, 0);
      return false;
    }
    SetFh(r, fi);
    r.size = size;
    r.offset = static_cast<uint64_t>(offset);
    return true;
  });
}

void OnReleasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Handle(req, Op::kReleasedir, ino, [&](Request& r) { SetFh(r, fi); return true; });
}

void OnFsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  Handle(req, Op::kFsyncdir, ino, [&](Request& r) {
    SetFh(r, fi);
    r.datasync = datasync != 0;
    return true;
  });
}

void OnStatfs(fuse_req_t req, fuse_ino_t ino) {
  Handle(req, Op::kStatfs, ino, [](Request&) { return true; });
}

void OnSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  Handle(req, Op::kSetxattr, ino, [&](Request& r) {
    r.name = name;
    r.flags = flags;
    CopyData(r, value, size);
    return true;
  });
}

void OnGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Handle(req, Op::kGetxattr, ino, [&](Request& r) {
    r.name = name;
    r.size = size;
    return true;
  });
}

void OnListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Handle(req, Op::kListxattr, ino, [&](Request& r) { r.size = size; return true; });
}

void OnRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Handle(req, Op::kRemovexattr, ino, [&](Request& r) { r.name = name; return true; });
}

void OnAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  Handle(req, Op::kAccess, ino, [&](Request& r) { r.mask = static_cast<uint32_t>(mask); return true; });
}

void OnCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  Handle(req, Op::kCreate, parent, [&](Request& r) {
    r.name = name;
    r.mode = mode;
    r.flags = fi->flags;
    return true;
  });
}

// Only the operations JS implements are installed: for the others libfuse's defaults apply (open and
// opendir succeed with fh 0, release succeeds, statfs reports an empty file system, a forget is
// dropped, the rest answer ENOSYS, which the kernel remembers for flush, fsync, access, xattrs and create).
fuse_lowlevel_ops OperationsTable(uint32_t implemented) {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = OnInitHook;
  auto has = [implemented](Op op) { return (implemented & Bit(op)) != 0; };
  if (has(Op::kLookup)) ops.lookup = OnLookup;
  if (has(Op::kForget)) {
    ops.forget = OnForget;
    ops.forget_multi = OnForgetMulti;
  }
  if (has(Op::kGetattr)) ops.getattr = OnGetattr;
  if (has(Op::kSetattr)) ops.setattr = OnSetattr;
  if (has(Op::kReadlink)) ops.readlink = OnReadlink;
  if (has(Op::kMknod)) ops.mknod = OnMknod;
  if (has(Op::kMkdir)) ops.mkdir = OnMkdir;
  if (has(Op::kUnlink)) ops.unlink = OnUnlink;
  if (has(Op::kRmdir)) ops.rmdir = OnRmdir;
  if (has(Op::kSymlink)) ops.symlink = OnSymlink;
  if (has(Op::kRename)) ops.rename = OnRename;
  if (has(Op::kLink)) ops.link = OnLink;
  if (has(Op::kOpen)) ops.open = OnOpen;
  if (has(Op::kRead)) ops.read = OnRead;
  if (has(Op::kWrite)) ops.write = OnWrite;
  if (has(Op::kFlush)) ops.flush = OnFlush;
  if (has(Op::kRelease)) ops.release = OnRelease;
  if (has(Op::kFsync)) ops.fsync = OnFsync;
  if (has(Op::kOpendir)) ops.opendir = OnOpendir;
  if (has(Op::kReaddir)) ops.readdir = OnReaddir;
  if (has(Op::kReleasedir)) ops.releasedir = OnReleasedir;
  if (has(Op::kFsyncdir)) ops.fsyncdir = OnFsyncdir;
  if (has(Op::kStatfs)) ops.statfs = OnStatfs;
  if (has(Op::kSetxattr)) ops.setxattr = OnSetxattr;
  if (has(Op::kGetxattr)) ops.getxattr = OnGetxattr;
  if (has(Op::kListxattr)) ops.listxattr = OnListxattr;
  if (has(Op::kRemovexattr)) ops.removexattr = OnRemovexattr;
  if (has(Op::kAccess)) ops.access = OnAccess;
  if (has(Op::kCreate)) ops.create = OnCreate;
  return ops;
}

// Frees a fuse_args on every path (libfuse frees it itself on some failures; a second free is a no-op).
struct ArgsGuard {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~ArgsGuard() { fuse_opt_free_args(&args); }
};

}  // namespace

void InstallLogger() { fuse_set_log_func(LogMessage); }

std::unique_ptr<Loop> Loop::Mount(const MountConfig& config, Sink sink, void* sinkContext, MountError* kind,
                                  std::string* error) {
  threadLog.clear();
  std::unique_ptr<Loop> loop(new Loop(sink, sinkContext));
  auto fail = [&](MountError what, const std::string& message) -> std::unique_ptr<Loop> {
    *kind = what;
    *error = message;
    if (!threadLog.empty()) {
      std::string log = threadLog;
      while (!log.empty() && (log.back() == '\n' || log.back() == ' ')) log.pop_back();
      *error += " (libfuse: " + log + ")";
    }
    return nullptr;
  };

  ArgsGuard guard;
  bool added = fuse_opt_add_arg(&guard.args, "dpms") == 0;
  for (const std::string& option : config.options) {
    added = added && fuse_opt_add_arg(&guard.args, "-o") == 0 && fuse_opt_add_arg(&guard.args, option.c_str()) == 0;
  }
  if (!added) return fail(MountError::kSystem, "out of memory building the mount options");
  // Connection options (max_write, writeback_cache, ...) are not mount options: take them out first
  // and apply them in init, as the high-level fuse_new does.
  loop->connOptions_ = fuse_parse_conn_info_opts(&guard.args);
  if (loop->connOptions_ == nullptr) return fail(MountError::kBadOption, "invalid connection option");

  const fuse_lowlevel_ops ops = OperationsTable(config.implemented);
  loop->session_ = fuse_session_new(&guard.args, &ops, sizeof ops, loop.get());
  if (loop->session_ == nullptr) return fail(MountError::kBadOption, "libfuse refused the mount options");
  if (fuse_session_mount(loop->session_, config.mountpoint.c_str()) != 0) {
    return fail(MountError::kMount, "cannot mount on " + config.mountpoint);
  }
  loop->mounted_ = true;
  loop->fuseFd_ = fuse_session_fd(loop->session_);
  const int flags = fcntl(loop->fuseFd_, F_GETFL);
  if (flags < 0 || fcntl(loop->fuseFd_, F_SETFL, flags | O_NONBLOCK) != 0) {
    const int err = errno;
    return fail(MountError::kSystem, std::string("cannot make /dev/fuse non-blocking: ") + std::strerror(err));
  }
  loop->wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (loop->wakeFd_ < 0) {
    const int err = errno;
    return fail(MountError::kSystem, std::string("eventfd: ") + std::strerror(err));
  }
  loop->endRequest_ = std::make_unique<Request>();
  loop->endRequest_->op = Op::kEnd;
  return loop;  // a failure above unmounts and destroys through ~Loop
}

Loop::~Loop() {
  StopAndUnmount();
  Destroy();
}

bool Loop::Start(std::string* error) {
  try {
    thread_ = std::thread(&Loop::Run, this);
  } catch (const std::system_error& e) {
    *error = std::string("cannot start the FUSE loop thread: ") + e.what();
    return false;
  }
  return true;
}

void Loop::OnInit(fuse_conn_info* conn) {
  // Reads may be sent in parallel; writes go straight to JS (no writeback cache: what a writer wrote is
  // in the file system when write(2) returns, so close-to-open holds across nodes). O_TRUNC arrives as
  // setattr(size 0) and clearing suid/sgid on write or chown as setattr(mode) (no atomic_o_trunc, no
  // handle_killpriv), so each of those has exactly one code path in JS.
  if ((conn->capable & FUSE_CAP_ASYNC_READ) != 0) conn->want |= FUSE_CAP_ASYNC_READ;
  conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_HANDLE_KILLPRIV |
                  FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  // libfuse has already lowered max_write to its receive buffer (1 MiB); it turns max_write into the
  // kernel's max_pages, which the kernel caps at its own limit (fs.fuse.max_pages_limit).
  const unsigned bufferLimit = conn->max_write < kMaxWriteBytes ? conn->max_write : kMaxWriteBytes;
  conn->max_write = bufferLimit;
  // Explicit -o connection options win over the defaults above, except that writes never exceed the
  // receive buffer.
  if (connOptions_ != nullptr) fuse_apply_conn_info_opts(connOptions_, conn);
  if (conn->max_write > bufferLimit) conn->max_write = bufferLimit;
  conn->want &= conn->capable;
  try {
    auto request = std::make_unique<Request>();
    request->op = Op::kInit;
    request->size = conn->max_write;
    request->offset = conn->max_readahead;
    Deliver(request.release());
  } catch (...) {
    // JS's init hook is advisory; mounting goes on without it.
  }
}

void Loop::Run() {
  // Signals are for the main thread (libuv's handlers); this thread only polls.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);

  fuse_buf buffer;
  std::memset(&buffer, 0, sizeof buffer);
  int error = 0;
  while (fuse_session_exited(session_) == 0) {
    pollfd fds[2] = {{fuseFd_, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      error = errno;
      break;
    }
    if (fds[1].revents != 0) break;  // RequestStop
    const int received = fuse_session_receive_buf(session_, &buffer);
    if (received == -EINTR || received == -EAGAIN) continue;
    if (received < 0) {
      error = -received;
      break;
    }
    if (received == 0) break;  // unmounted or aborted (ENODEV), or exited
    fuse_session_process_buf(session_, &buffer);
  }
  std::free(buffer.mem);
  Request* end = endRequest_.release();
  end->error = error;
  Deliver(end);
}

void Loop::RequestStop() {
  if (session_ != nullptr) fuse_session_exit(session_);
  if (wakeFd_ >= 0) {
    const uint64_t one = 1;
    // A full counter (EAGAIN) still wakes the poll, so the result does not matter.
    if (write(wakeFd_, &one, sizeof one) < 0) errno = 0;
  }
}

void Loop::StopAndUnmount() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
  if (mounted_) {
    // Polls the device first: after an external unmount or an abort it only closes the descriptor.
    fuse_session_unmount(session_);
    mounted_ = false;
  }
}

void Loop::Destroy() {
  if (thread_.joinable()) StopAndUnmount();
  if (session_ != nullptr) {
    fuse_session_destroy(session_);
    session_ = nullptr;
  }
  std::free(connOptions_);  // a plain calloc'ed struct in libfuse
  connOptions_ = nullptr;
  if (wakeFd_ >= 0) {
    close(wakeFd_);
    wakeFd_ = -1;
  }
}

}  // namespace dpms::fuse
