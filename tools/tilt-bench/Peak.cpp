//===- Peak.cpp - This machine's arithmetic peaks, measured ---------------===//
//
// Each thread runs enough independent dependency chains to cover the FMA
// (or TDPBF16PS) latency on every port, for a fixed time; the sum of their
// rates is the peak a kernel can be compared with on this very machine.
//
//===----------------------------------------------------------------------===//

#include "Peak.h"

#include "tilt/CpuIsa.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace tilt::tools {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kSeconds = 0.2;

template <typename Body> double runOnThreads(int threads, Body body) {
  std::vector<double> flops(threads, 0.0);
  std::vector<std::thread> pool;
  std::atomic<int> ready{0};
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      flops[t] = body();
    });
  for (std::thread &th : pool)
    th.join();
  double total = 0;
  for (double f : flops)
    total += f;
  return total / 1e9;
}

__attribute__((target("avx512f"))) double fmaLoopAvx512() {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i)
    acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
  int64_t iters = 0;
  auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int rep = 0; rep < 1000; ++rep)
      for (int i = 0; i < 16; ++i)
        acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    iters += 1000;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < kSeconds);
  // Keep the chains alive.
  __m512 sum = acc[0];
  for (int i = 1; i < 16; ++i)
    sum = _mm512_add_ps(sum, acc[i]);
  alignas(64) float out[16];
  _mm512_store_ps(out, sum);
  volatile float sink = out[0];
  (void)sink;
  return double(iters) * 16 * 16 * 2 / elapsed;
}

__attribute__((target("avx2,fma"))) double fmaLoopAvx2() {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i)
    acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-3f);
  int64_t iters = 0;
  auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int rep = 0; rep < 1000; ++rep)
      for (int i = 0; i < 12; ++i)
        acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    iters += 1000;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < kSeconds);
  float out[8];
  __m256 sum = acc[0];
  for (int i = 1; i < 12; ++i)
    sum = _mm256_add_ps(sum, acc[i]);
  _mm256_storeu_ps(out, sum);
  volatile float sink = out[0];
  (void)sink;
  return double(iters) * 12 * 8 * 2 / elapsed;
}

bool cpuHasAmxBf16() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    return false;
  return (edx >> 22 & 1) && (edx >> 24 & 1); // AMX-BF16, AMX-TILE
}

bool requestAmx() {
  // Linux grants AMX tile data per process on request (arch_prctl).
  constexpr int kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

struct alignas(64) TileConfigBlock {
  uint8_t palette = 1, startRow = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

__attribute__((target("amx-tile,amx-bf16"))) double amxLoop() {
  TileConfigBlock cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  alignas(64) static thread_local uint16_t data[16 * 32];
  std::memset(data, 0, sizeof(data));
  for (int t = 0; t < 8; ++t) {
    switch (t) { // tile numbers must be immediates
    case 0: _tile_zero(0); break;
    case 1: _tile_zero(1); break;
    case 2: _tile_zero(2); break;
    case 3: _tile_zero(3); break;
    default: break;
    }
  }
  _tile_loadd(4, data, 64);
  _tile_loadd(5, data, 64);
  _tile_loadd(6, data, 64);
  _tile_loadd(7, data, 64);
  int64_t iters = 0;
  auto start = Clock::now();
  double elapsed = 0;
  do {
    for (int rep = 0; rep < 1000; ++rep) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    iters += 1000;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < kSeconds);
  alignas(64) float out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  volatile float sink = out[0];
  (void)sink;
  // One TDPBF16PS: 16 x 16 outputs, 32 products each, 2 flops a product.
  return double(iters) * 4 * 16 * 16 * 32 * 2 / elapsed;
}

/// Sums `n` floats (n a multiple of 64) with eight independent AVX2 chains;
/// returns the sum so the loads cannot be dropped.
__attribute__((target("avx2"))) float sumAvx2(const float *p, size_t n) {
  __m256 acc[8];
  for (int i = 0; i < 8; ++i)
    acc[i] = _mm256_setzero_ps();
  for (size_t i = 0; i < n; i += 64)
    for (int c = 0; c < 8; ++c)
      acc[c] = _mm256_add_ps(acc[c], _mm256_load_ps(p + i + 8 * c));
  for (int i = 1; i < 8; ++i)
    acc[0] = _mm256_add_ps(acc[0], acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, acc[0]);
  return out[0];
}

} // namespace

double measureReadBandwidth(int threads) {
  constexpr size_t kFloats = size_t(128) << 18; // 128 MiB a thread
  // Each thread sets up its own buffer (the first touch places its pages),
  // then all start reading together and stop together: the set-up's page
  // faults take a different time per thread, and per-thread rates over
  // windows that overlapped only in part summed to more than the threads
  // read at once. The bytes of every thread over the longest window.
  std::vector<float *> bufs(threads, nullptr);
  std::vector<int64_t> passes(threads, 0);
  std::vector<double> elapsed(threads, 0.0);
  std::atomic<int> ready{0};
  std::atomic<bool> stop{false}, failed{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      float *buf = static_cast<float *>(std::aligned_alloc(64, kFloats * 4));
      if (buf) {
        for (size_t i = 0; i < kFloats; ++i) // touch every page first
          buf[i] = 1.0f;
        volatile float sink = sumAvx2(buf, kFloats); // warm-up pass
        (void)sink;
      }
      bufs[t] = buf;
      if (!buf)
        failed.store(true);
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      // A thread without its buffer would leave the others reading (thread
      // 0 keeps the time): no one reads, and the probe reports 0.
      if (failed.load())
        return;
      auto start = Clock::now();
      volatile float sink = 0;
      do {
        sink = sumAvx2(buf, kFloats);
        ++passes[t];
        // Thread 0 keeps the time: 3 kSeconds, then everyone stops after
        // the pass under way.
        if (t == 0 &&
            std::chrono::duration<double>(Clock::now() - start).count() >=
                3 * kSeconds)
          stop.store(true);
      } while (!stop.load());
      elapsed[t] = std::chrono::duration<double>(Clock::now() - start).count();
      (void)sink;
    });
  for (std::thread &th : pool)
    th.join();
  double bytes = 0, longest = 0;
  for (int t = 0; t < threads; ++t) {
    std::free(bufs[t]);
    bytes += double(passes[t]) * double(kFloats) * 4;
    longest = std::max(longest, elapsed[t]);
  }
  return !failed.load() && longest > 0 ? bytes / longest / 1e9 : 0.0;
}

double measureFp32Peak(int threads) {
  // The widest FMA the host's class (after TILT_CPU_CLASS) allows.
  if (hostCpu().has("avx512f"))
    return runOnThreads(threads, fmaLoopAvx512);
  return runOnThreads(threads, fmaLoopAvx2);
}

double measureAmxPeak(int threads) {
  if (!cpuHasAmxBf16() || !requestAmx())
    return 0.0;
  return runOnThreads(threads, amxLoop);
}

} // namespace tilt::tools
