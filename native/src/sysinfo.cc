// Environment facts for `dpms doctor` (scripts/commands/doctor.ts), read through the same libraries
// the data path uses, so that what doctor says is what the transports and pools will see:
//   rdmaDevices()   every RDMA device libibverbs finds: GUID, transport, firmware, and per port the
//                   state, link layer, MTU, LID and the non-zero GIDs (with their RoCE type from sysfs).
//                   No device (or no kernel support at all) is an empty list, never an error; a device
//                   that cannot be opened or queried carries an `error` string in its own entry.
//   pmemInfo(path)  maps an existing file with pmem_map_file and says whether libpmem takes it for
//                   real PM, plus libpmem's version (compiled against, and whether the loaded library
//                   accepts it); unmaps before returning.
#include "sysinfo.h"

#include <infiniband/verbs.h>
#include <libpmem.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <endian.h>
#include <fstream>
#include <string>

#include "errors.h"

namespace dpms {

namespace {

// A port lists at most this many GIDs: enough to see every RoCE v1/v2 address of a few netdev IPs,
// small enough that a device with a 256-entry table does not flood the report.
constexpr int kMaxGidsPerPort = 16;
// GID table entries scanned per port (rxe has 1024; mlx5 256); zero entries are skipped.
constexpr int kMaxGidTableScan = 1024;
// Ports reported per device (HCAs have 1 or 2).
constexpr int kMaxPorts = 16;

std::string HexGroups(const uint8_t* bytes, size_t length) {
  std::string out;
  char hex[3];
  for (size_t i = 0; i < length; ++i) {
    if (i > 0 && i % 2 == 0) out += ':';
    std::snprintf(hex, sizeof hex, "%02x", bytes[i]);
    out += hex;
  }
  return out;
}

std::string GuidString(__be64 guid) {
  const uint64_t host = be64toh(guid);
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(host >> (56 - 8 * i));
  return HexGroups(bytes, sizeof bytes);
}

const char* TransportName(ibv_transport_type type) {
  switch (type) {
    case IBV_TRANSPORT_IB: return "InfiniBand";
    case IBV_TRANSPORT_IWARP: return "iWARP";
    case IBV_TRANSPORT_USNIC: return "usNIC";
    case IBV_TRANSPORT_USNIC_UDP: return "usNIC UDP";
    case IBV_TRANSPORT_UNSPECIFIED: return "unspecified";
    default: return "unknown";
  }
}

const char* PortStateName(ibv_port_state state) {
  switch (state) {
    case IBV_PORT_NOP: return "NOP";
    case IBV_PORT_DOWN: return "DOWN";
    case IBV_PORT_INIT: return "INIT";
    case IBV_PORT_ARMED: return "ARMED";
    case IBV_PORT_ACTIVE: return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER: return "ACTIVE_DEFER";
    default: return "UNKNOWN";
  }
}

// The IBTA PortPhysicalState values (what ibv_devinfo prints as phys_state).
const char* PhysStateName(uint8_t state) {
  switch (state) {
    case 1: return "SLEEP";
    case 2: return "POLLING";
    case 3: return "DISABLED";
    case 4: return "PORT_CONFIGURATION_TRAINING";
    case 5: return "LINK_UP";
    case 6: return "LINK_ERROR_RECOVERY";
    case 7: return "PHY_TEST";
    default: return "UNKNOWN";
  }
}

const char* LinkLayerName(uint8_t layer) {
  // Unspecified is what old InfiniBand drivers report.
  return layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
}

int MtuBytes(ibv_mtu mtu) {
  switch (mtu) {
    case IBV_MTU_256: return 256;
    case IBV_MTU_512: return 512;
    case IBV_MTU_1024: return 1024;
    case IBV_MTU_2048: return 2048;
    case IBV_MTU_4096: return 4096;
    default: return 0;
  }
}

// One line of a sysfs attribute, without its newline; empty when unreadable (old kernels have no
// gid_attrs, and an unused GID's type file reads EINVAL).
std::string ReadSysfsLine(const std::string& path) {
  std::ifstream file(path);
  std::string line;
  if (!file || !std::getline(file, line)) return "";
  return line;
}

Napi::Object DescribePort(Napi::Env env, ibv_context* context, const std::string& device, int port) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("port", port);
  ibv_port_attr attr{};
  const int rc = ibv_query_port(context, static_cast<uint8_t>(port), &attr);
  if (rc != 0) {
    out.Set("error", std::string("ibv_query_port: ") + std::strerror(rc));
    return out;
  }
  out.Set("state", PortStateName(attr.state));
  out.Set("physState", PhysStateName(attr.phys_state));
  out.Set("linkLayer", LinkLayerName(attr.link_layer));
  out.Set("activeMtu", MtuBytes(attr.active_mtu));
  out.Set("lid", static_cast<double>(attr.lid));
  Napi::Array gids = Napi::Array::New(env);
  uint32_t listed = 0;
  const int scan = attr.gid_tbl_len < kMaxGidTableScan ? attr.gid_tbl_len : kMaxGidTableScan;
  const std::string attrs = "/sys/class/infiniband/" + device + "/ports/" + std::to_string(port) + "/gid_attrs/";
  for (int index = 0; index < scan && listed < kMaxGidsPerPort; ++index) {
    ibv_gid gid{};
    if (ibv_query_gid(context, static_cast<uint8_t>(port), index, &gid) != 0) continue;
    bool zero = true;
    for (uint8_t byte : gid.raw) zero = zero && byte == 0;
    if (zero) continue;
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("index", index);
    entry.Set("gid", HexGroups(gid.raw, sizeof gid.raw));
    const std::string type = ReadSysfsLine(attrs + "types/" + std::to_string(index));
    if (!type.empty()) entry.Set("type", type);
    const std::string netdev = ReadSysfsLine(attrs + "ndevs/" + std::to_string(index));
    if (!netdev.empty()) entry.Set("netdev", netdev);
    gids.Set(listed++, entry);
  }
  out.Set("gids", gids);
  return out;
}

Napi::Object DescribeDevice(Napi::Env env, ibv_device* device) {
  Napi::Object out = Napi::Object::New(env);
  const char* rawName = ibv_get_device_name(device);
  const std::string name = rawName != nullptr ? rawName : "?";
  out.Set("name", name);
  out.Set("nodeGuid", GuidString(ibv_get_device_guid(device)));
  out.Set("transport", TransportName(device->transport_type));
  out.Set("nodeType", ibv_node_type_str(device->node_type));
  Napi::Array ports = Napi::Array::New(env);
  out.Set("ports", ports);

  errno = 0;
  ibv_context* context = ibv_open_device(device);
  if (context == nullptr) {
    out.Set("error", std::string("ibv_open_device: ") + std::strerror(errno == 0 ? ENODEV : errno));
    return out;
  }
  ibv_device_attr attr{};
  const int rc = ibv_query_device(context, &attr);
  if (rc != 0) {
    out.Set("error", std::string("ibv_query_device: ") + std::strerror(rc));
  } else {
    out.Set("fwVersion", std::string(attr.fw_ver, strnlen(attr.fw_ver, sizeof attr.fw_ver)));
    const int count = attr.phys_port_cnt < kMaxPorts ? attr.phys_port_cnt : kMaxPorts;
    for (int port = 1; port <= count; ++port) ports.Set(static_cast<uint32_t>(port - 1), DescribePort(env, context, name, port));
  }
  ibv_close_device(context);
  return out;
}

// rdmaDevices()
Napi::Value RdmaDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  int count = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  // NULL (ENOSYS on a kernel without InfiniBand support) and an empty list both mean: no device.
  if (devices == nullptr) return out;
  for (int i = 0; i < count; ++i) out.Set(static_cast<uint32_t>(i), DescribeDevice(env, devices[i]));
  ibv_free_device_list(devices);
  return out;
}

// pmemInfo(path)
Napi::Value PmemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowStatus(env, Status::kInvalidArgument, "path must be a string");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  size_t mappedLen = 0;
  int isPmem = 0;
  void* addr = pmem_map_file(path.c_str(), 0, 0, 0, &mappedLen, &isPmem);
  if (addr == nullptr) {
    const int err = errno;
    if (err == ENOENT) ThrowStatus(env, Status::kNotFound, "pmem_map_file " + path + ": no such file");
    ThrowIo(env, "pmem_map_file " + path, err, true);
  }
  const bool rangeIsPmem = pmem_is_pmem(addr, mappedLen) != 0;
  const bool autoFlush = pmem_has_auto_flush() == 1;
  pmem_unmap(addr, mappedLen);

  Napi::Object out = Napi::Object::New(env);
  // pmem_map_file's answer for the file; pmem_is_pmem agrees with it except under PMEM_IS_PMEM_FORCE.
  out.Set("isPmem", isPmem != 0 || rangeIsPmem);
  out.Set("mappedBytes", static_cast<double>(mappedLen));
  out.Set("hasAutoFlush", autoFlush);
  Napi::Object version = Napi::Object::New(env);
  version.Set("major", PMEM_MAJOR_VERSION);
  version.Set("minor", PMEM_MINOR_VERSION);
  const char* mismatch = pmem_check_version(PMEM_MAJOR_VERSION, PMEM_MINOR_VERSION);
  version.Set("check", mismatch == nullptr ? env.Null() : Napi::String::New(env, mismatch));
  out.Set("libpmemVersion", version);
  return out;
}

}  // namespace

void InitSysInfo(Napi::Env env, Napi::Object exports) {
  exports.Set("rdmaDevices", Napi::Function::New(env, RdmaDevices, "rdmaDevices"));
  exports.Set("pmemInfo", Napi::Function::New(env, PmemInfo, "pmemInfo"));
}

}  // namespace dpms
