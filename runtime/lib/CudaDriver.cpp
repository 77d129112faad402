//===- CudaDriver.cpp - The CUDA driver API, loaded at run time -----------===//

#include "CudaDriver.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <utility>

namespace tilt::detail {

namespace {

/// Binds `slot` to the first of `names` the driver exports; false if none.
template <typename Fn>
bool bind(void *lib, Fn &slot, std::initializer_list<const char *> names) {
  for (const char *name : names)
    if (void *sym = dlsym(lib, name)) {
      slot = reinterpret_cast<Fn>(sym);
      return true;
    }
  slot = nullptr;
  return false;
}

/// Loads and initializes the driver; "" or an error. Runs once.
std::string loadDriver(CudaDriver &d) {
  // Never unloaded: the driver keeps threads and state for the process.
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    return "cuda: no driver (libcuda.so.1 not found)";
  const char *missing = nullptr;
  auto need = [&](auto &slot, std::initializer_list<const char *> names) {
    if (!bind(lib, slot, names) && !missing)
      missing = *names.begin();
  };
  need(d.cuInit, {"cuInit"});
  need(d.cuDriverGetVersion, {"cuDriverGetVersion"});
  need(d.cuDeviceGet, {"cuDeviceGet"});
  need(d.cuDeviceGetCount, {"cuDeviceGetCount"});
  need(d.cuDeviceGetAttribute, {"cuDeviceGetAttribute"});
  need(d.cuDeviceGetName, {"cuDeviceGetName"});
  need(d.cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"});
  need(d.cuCtxSetCurrent, {"cuCtxSetCurrent"});
  need(d.cuCtxSynchronize, {"cuCtxSynchronize"});
  need(d.cuModuleLoadData, {"cuModuleLoadData"});
  need(d.cuModuleUnload, {"cuModuleUnload"});
  need(d.cuModuleGetFunction, {"cuModuleGetFunction"});
  need(d.cuFuncSetAttribute, {"cuFuncSetAttribute"});
  need(d.cuFuncGetAttribute, {"cuFuncGetAttribute"});
  need(d.cuLaunchKernel, {"cuLaunchKernel"});
  need(d.cuMemAlloc, {"cuMemAlloc_v2"});
  need(d.cuMemFree, {"cuMemFree_v2"});
  need(d.cuMemcpyHtoD, {"cuMemcpyHtoD_v2"});
  need(d.cuMemcpyDtoH, {"cuMemcpyDtoH_v2"});
  need(d.cuMemsetD8, {"cuMemsetD8_v2"});
  need(d.cuStreamSynchronize, {"cuStreamSynchronize"});
  need(d.cuEventCreate, {"cuEventCreate"});
  need(d.cuEventRecord, {"cuEventRecord"});
  need(d.cuEventSynchronize, {"cuEventSynchronize"});
  // The _v2 names are newer than some drivers Tilt supports (CUDA 12.8);
  // the older entry points behave the same for these calls.
  need(d.cuEventElapsedTime, {"cuEventElapsedTime_v2", "cuEventElapsedTime"});
  need(d.cuEventDestroy, {"cuEventDestroy_v2", "cuEventDestroy"});
  need(d.cuGetErrorName, {"cuGetErrorName"});
  need(d.cuGetErrorString, {"cuGetErrorString"});
  bind(lib, d.cuTensorMapEncodeTiled, {"cuTensorMapEncodeTiled"});
  if (missing)
    return fmt::format("cuda: the driver lacks {} (too old)", missing);

  CUresult r = d.cuInit(0);
  if (r == CUDA_ERROR_NO_DEVICE)
    return "cuda: no device";
  if (std::string err = d.check(r, "cuInit"); !err.empty())
    return err;
  int count = 0;
  if (std::string err = d.check(d.cuDeviceGetCount(&count), "cuDeviceGetCount");
      !err.empty())
    return err;
  if (count < 1)
    return "cuda: no device";
  if (std::string err = d.check(d.cuDeviceGet(&d.device, 0), "cuDeviceGet");
      !err.empty())
    return err;
  if (std::string err = d.check(d.cuDevicePrimaryCtxRetain(&d.context, d.device),
                                "cuDevicePrimaryCtxRetain");
      !err.empty())
    return err;

  cuda::DeviceInfo &info = d.info;
  char name[256] = {};
  std::pair<int *, int> attributes[] = {
      {&info.ccMajor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR},
      {&info.ccMinor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR},
      {&info.smCount, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT},
      {&info.maxSharedPerBlock,
       CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN}};
  for (auto [value, attribute] : attributes)
    if (std::string err =
            d.check(d.cuDeviceGetAttribute(value, attribute, d.device),
                    "cuDeviceGetAttribute");
        !err.empty())
      return err;
  if (std::string err = d.check(d.cuDeviceGetName(name, sizeof name - 1,
                                                  d.device),
                                "cuDeviceGetName");
      !err.empty())
    return err;
  if (std::string err =
          d.check(d.cuDriverGetVersion(&info.driverVersion),
                  "cuDriverGetVersion");
      !err.empty())
    return err;
  info.name = name;
  info.arch = fmt::format("sm_{}{}", info.ccMajor, info.ccMinor);
  return {};
}

/// The driver as seen from a thread, its context made current.
const CudaDriver *currentDriver(std::string &error) {
  const CudaDriver *d = cudaDriver(error);
  if (d)
    error = d->makeCurrent();
  return error.empty() ? d : nullptr;
}

} // namespace

std::string CudaDriver::check(CUresult result, const char *call) const {
  if (result == CUDA_SUCCESS)
    return {};
  const char *name = nullptr;
  if (cuGetErrorName(result, &name) != CUDA_SUCCESS || !name)
    return fmt::format("cuda: {} failed: error {}", call, result);
  return fmt::format("cuda: {} failed: {}", call, name);
}

std::string CudaDriver::makeCurrent() const {
  return check(cuCtxSetCurrent(context), "cuCtxSetCurrent");
}

const CudaDriver *cudaDriver(std::string &error) {
  // A function-local static: initialized once, thread-safely.
  static const std::pair<CudaDriver, std::string> loaded = [] {
    std::pair<CudaDriver, std::string> p{};
    p.second = loadDriver(p.first);
    return p;
  }();
  error = loaded.second;
  return error.empty() ? &loaded.first : nullptr;
}

} // namespace tilt::detail

//===----------------------------------------------------------------------===//
// tilt/Cuda.h
//===----------------------------------------------------------------------===//

namespace tilt::cuda {

using detail::CudaDriver;
using detail::CUdeviceptr;
using detail::CUevent;

namespace {

CUdeviceptr devicePtr(const void *p) {
  return CUdeviceptr(reinterpret_cast<uintptr_t>(p));
}

} // namespace

std::string probe(DeviceInfo &info) {
  std::string err;
  const CudaDriver *d = detail::cudaDriver(err);
  if (d)
    info = d->info;
  return err;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer &&other) noexcept
    : ptr(std::exchange(other.ptr, nullptr)),
      bytes(std::exchange(other.bytes, 0)) {}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  if (this != &other) {
    reset();
    ptr = std::exchange(other.ptr, nullptr);
    bytes = std::exchange(other.bytes, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { reset(); }

void DeviceBuffer::reset() {
  if (ptr) {
    std::string ignored;
    // A buffer exists only if the driver loaded.
    if (const CudaDriver *d = detail::currentDriver(ignored))
      d->cuMemFree(devicePtr(ptr));
  }
  ptr = nullptr;
  bytes = 0;
}

std::string DeviceBuffer::allocate(size_t n) {
  reset();
  std::string err;
  const CudaDriver *d = detail::currentDriver(err);
  if (!d || n == 0)
    return err;
  CUdeviceptr p = 0;
  if (err = d->check(d->cuMemAlloc(&p, n), "cuMemAlloc_v2"); !err.empty())
    return err;
  ptr = reinterpret_cast<void *>(uintptr_t(p));
  bytes = n;
  return {};
}

std::string DeviceBuffer::upload(const void *src, size_t n, size_t offset) {
  if (offset + n > bytes)
    return fmt::format("cuda: upload of {} bytes at {} overruns a buffer of "
                       "{}",
                       n, offset, bytes);
  return copyToDevice(static_cast<char *>(ptr) + offset, src, n);
}

std::string DeviceBuffer::download(void *dst, size_t n, size_t offset) const {
  if (offset + n > bytes)
    return fmt::format("cuda: download of {} bytes at {} overruns a buffer "
                       "of {}",
                       n, offset, bytes);
  return copyToHost(dst, static_cast<const char *>(ptr) + offset, n);
}

std::string DeviceBuffer::fill(unsigned char value) {
  std::string err;
  const CudaDriver *d = detail::currentDriver(err);
  if (!d || bytes == 0)
    return err;
  return d->check(d->cuMemsetD8(devicePtr(ptr), value, bytes),
                  "cuMemsetD8_v2");
}

std::string copyToDevice(void *deviceDst, const void *hostSrc, size_t bytes) {
  std::string err;
  const CudaDriver *d = detail::currentDriver(err);
  if (!d || bytes == 0)
    return err;
  return d->check(d->cuMemcpyHtoD(devicePtr(deviceDst), hostSrc, bytes),
                  "cuMemcpyHtoD_v2");
}

std::string copyToHost(void *hostDst, const void *deviceSrc, size_t bytes) {
  std::string err;
  const CudaDriver *d = detail::currentDriver(err);
  if (!d || bytes == 0)
    return err;
  return d->check(d->cuMemcpyDtoH(hostDst, devicePtr(deviceSrc), bytes),
                  "cuMemcpyDtoH_v2");
}

std::string synchronize() {
  std::string err;
  const CudaDriver *d = detail::currentDriver(err);
  if (!d)
    return err;
  return d->check(d->cuCtxSynchronize(), "cuCtxSynchronize");
}

std::string timeKernel(const std::function<std::string()> &launch, int repeats,
                       std::vector<double> &msOut) {
  std::string err;
  const CudaDriver *d = detail::currentDriver(err);
  if (!d)
    return err;
  CUevent start = nullptr, stop = nullptr;
  auto destroy = [&] {
    if (start)
      d->cuEventDestroy(start);
    if (stop)
      d->cuEventDestroy(stop);
  };
  if ((err = d->check(d->cuEventCreate(&start, detail::CU_EVENT_DEFAULT),
                      "cuEventCreate"))
          .empty())
    err = d->check(d->cuEventCreate(&stop, detail::CU_EVENT_DEFAULT),
                   "cuEventCreate");
  // One pair of events per run, each run waited for: the time is the
  // kernel's, not a queue of them (launch overhead hides behind nothing).
  for (int r = 0; r < repeats && err.empty(); ++r) {
    float ms = 0;
    if ((err = d->check(d->cuEventRecord(start, nullptr), "cuEventRecord"))
            .empty() &&
        (err = launch()).empty() &&
        (err = d->check(d->cuEventRecord(stop, nullptr), "cuEventRecord"))
            .empty() &&
        (err = d->check(d->cuEventSynchronize(stop), "cuEventSynchronize"))
            .empty() &&
        (err = d->check(d->cuEventElapsedTime(&ms, start, stop),
                        "cuEventElapsedTime"))
            .empty())
      msOut.push_back(ms);
  }
  destroy();
  return err;
}

} // namespace tilt::cuda
