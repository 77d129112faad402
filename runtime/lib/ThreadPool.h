//===- ThreadPool.h - Persistent workers for kernel work items --*- C++ -*-===//
//
// Runs the items of one launch on threads that live as long as the Runtime:
// creating threads per call would cost more than a small attention. Items are
// handed out one at a time from an atomic counter because their costs differ
// widely (a causal row block near the bottom sees every key, one near the top
// almost none). The calling thread works too, so a pool of N threads has
// N - 1 workers.
//
//===----------------------------------------------------------------------===//

#ifndef TILT_RUNTIME_THREADPOOL_H
#define TILT_RUNTIME_THREADPOOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace tilt::detail {

class ThreadPool {
public:
  /// `threads` >= 1 counts the caller.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int threads() const { return int(workers.size()) + 1; }

  /// Calls fn(item) for every item in [0, count) exactly once and returns
  /// when all calls have finished. Concurrent callers are served one after
  /// another.
  template <typename Fn> void parallelFor(int64_t count, Fn &&fn) {
    using F = std::remove_reference_t<Fn>;
    run(
        count, [](void *ctx, int64_t item) { (*static_cast<F *>(ctx))(item); },
        const_cast<void *>(static_cast<const void *>(&fn)));
  }

private:
  using ItemFn = void (*)(void *ctx, int64_t item);

  void run(int64_t count, ItemFn fn, void *ctx);
  void workerLoop();
  /// Takes items until none are left.
  void drain();

  std::vector<std::thread> workers;
  std::mutex submitMutex; ///< one job at a time

  std::mutex mutex;             ///< guards everything below except `next`
  std::condition_variable wake; ///< workers wait for open seats
  std::condition_variable idle; ///< the caller waits for `active` == 0
  bool stopping = false;
  int seats = 0;  ///< workers that may still join the current job
  int active = 0; ///< workers inside the current job
  ItemFn jobFn = nullptr;
  void *jobCtx = nullptr;
  int64_t jobCount = 0;
  std::atomic<int64_t> next{0};
};

} // namespace tilt::detail

#endif // TILT_RUNTIME_THREADPOOL_H
