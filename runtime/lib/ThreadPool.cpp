//===- ThreadPool.cpp - Persistent workers for kernel work items ----------===//

#include "ThreadPool.h"

#include <algorithm>

namespace tilt::detail {

ThreadPool::ThreadPool(int threads) {
  workers.reserve(std::max(threads, 1) - 1);
  for (int i = 1; i < threads; ++i)
    workers.emplace_back([this] { workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  for (std::thread &t : workers)
    t.join();
}

void ThreadPool::drain() {
  for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < jobCount;
       i = next.fetch_add(1, std::memory_order_relaxed))
    jobFn(jobCtx, i);
}

void ThreadPool::run(int64_t count, ItemFn fn, void *ctx) {
  if (count <= 0)
    return;
  std::lock_guard<std::mutex> submit(submitMutex);
  // One item, or no workers: waking anyone would only add latency.
  if (count == 1 || workers.empty()) {
    for (int64_t i = 0; i < count; ++i)
      fn(ctx, i);
    return;
  }

  // Wake no more workers than there are items besides the caller's first.
  const int wanted = int(std::min<int64_t>(int64_t(workers.size()), count - 1));
  {
    std::lock_guard<std::mutex> lock(mutex);
    jobFn = fn;
    jobCtx = ctx;
    jobCount = count;
    next.store(0, std::memory_order_relaxed);
    seats = wanted;
  }
  if (wanted == int(workers.size()))
    wake.notify_all();
  else
    for (int i = 0; i < wanted; ++i)
      wake.notify_one();

  drain();

  // Close the job to late risers before waiting for those inside: after
  // this, no worker touches jobFn/jobCtx until the next job is posted.
  std::unique_lock<std::mutex> lock(mutex);
  seats = 0;
  idle.wait(lock, [this] { return active == 0; });
}

void ThreadPool::workerLoop() {
  std::unique_lock<std::mutex> lock(mutex);
  for (;;) {
    wake.wait(lock, [this] { return stopping || seats > 0; });
    if (stopping)
      return;
    --seats;
    ++active;
    lock.unlock();
    drain();
    lock.lock();
    if (--active == 0)
      idle.notify_one();
  }
}

} // namespace tilt::detail
