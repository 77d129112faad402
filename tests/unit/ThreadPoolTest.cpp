//===- ThreadPoolTest.cpp - Every item exactly once -----------------------===//

#include "ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace {

using tilt::detail::ThreadPool;

/// Runs `count` items on `pool` and checks each ran exactly once.
void expectEachOnce(ThreadPool &pool, int64_t count) {
  std::vector<std::atomic<int>> hits(count);
  pool.parallelFor(count, [&](int64_t i) {
    hits[i].fetch_add(1, std::memory_order_relaxed);
  });
  for (int64_t i = 0; i < count; ++i)
    ASSERT_EQ(hits[i].load(), 1) << "item " << i << " of " << count;
}

TEST(ThreadPool, CountsTheCaller) {
  EXPECT_EQ(ThreadPool(1).threads(), 1);
  EXPECT_EQ(ThreadPool(4).threads(), 4);
}

TEST(ThreadPool, EveryItemOnceForAnyCount) {
  ThreadPool pool(4);
  for (int64_t count : {0, 1, 2, 3, 4, 5, 7, 64, 1000, 100000})
    expectEachOnce(pool, count);
}

TEST(ThreadPool, SingleThreadRunsInline) {
  ThreadPool pool(1);
  std::set<std::thread::id> ids;
  pool.parallelFor(100,
                   [&](int64_t) { ids.insert(std::this_thread::get_id()); });
  EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
}

// Several threads launching on one pool at once, many tiny jobs each: every
// job still sees each of its items exactly once.
TEST(ThreadPool, EveryItemOnceUnderContention) {
  ThreadPool pool(4);
  std::atomic<int> failures{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&, c] {
      for (int round = 0; round < 200; ++round) {
        const int64_t count = 1 + (round * 7 + c * 13) % 97;
        std::vector<std::atomic<int>> hits(count);
        pool.parallelFor(count, [&](int64_t i) { hits[i].fetch_add(1); });
        for (auto &h : hits)
          failures += h.load() != 1;
      }
    });
  for (std::thread &t : callers)
    t.join();
  EXPECT_EQ(failures.load(), 0);
}

// Items of very uneven cost (like causal row blocks) are shared out: more
// than one thread takes part, and the results are complete.
TEST(ThreadPool, UnevenItemsAreShared) {
  ThreadPool pool(4);
  std::mutex m;
  std::set<std::thread::id> ids;
  std::vector<std::atomic<int>> hits(400);
  pool.parallelFor(400, [&](int64_t i) {
    volatile double x = 0;
    for (int64_t r = 0; r < i * 200; ++r)
      x = x + 1;
    hits[i].fetch_add(1);
    std::lock_guard<std::mutex> lock(m);
    ids.insert(std::this_thread::get_id());
  });
  for (auto &h : hits)
    ASSERT_EQ(h.load(), 1);
  EXPECT_GE(ids.size(), 2u);
}

} // namespace
