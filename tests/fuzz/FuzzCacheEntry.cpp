//===- FuzzCacheEntry.cpp - Disk cache entries: header and loader ---------===//
//
// The input is an entry file as found in the cache directory under a fixed
// key: decodeEntry() checks it alone, and DiskCache::read() loads it from
// disk. Both must agree, and neither may accept bytes that are not exactly
// an entry for the key.

#include "DiskCache.h"
#include "FuzzSupport.h"

#include <filesystem>

using namespace tilt::detail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const std::string key(64, 'a');
  static const std::string dir = tilt::fuzz::scratchDir() + "/cache";
  static DiskCache &cache = *[] {
    std::filesystem::create_directories(dir);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all);
    auto *c = new DiskCache(dir, 1 << 20);
    if (!c->open().empty())
      __builtin_trap();
    return c;
  }();
  std::string_view bytes(reinterpret_cast<const char *>(data), size);
  std::string_view payload;
  const bool decoded = decodeEntry(bytes, key, payload).empty();
  if (decoded && encodeEntry(key, payload) != bytes)
    __builtin_trap(); // accepted bytes that are not the entry of the key

  tilt::fuzz::writeScratch("cache/" + key + ".kernel", data, size);
  std::string loaded, why;
  DiskCache::Lookup result = cache.read(key, loaded, why);
  if ((result == DiskCache::Lookup::Hit) != decoded ||
      (decoded && loaded != payload))
    __builtin_trap();
  return 0;
}
