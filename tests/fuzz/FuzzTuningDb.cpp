//===- FuzzTuningDb.cpp - The tuning database reader ----------------------===//

#include "FuzzSupport.h"
#include "tilt/TuningDb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tilt::TuningDb db;
  if (!tilt::TuningDb::load(tilt::fuzz::writeScratch("db.tune", data, size), db)
           .empty())
    return 0;
  // What loads saves, and the saved file loads to the same records.
  std::string saved = tilt::fuzz::scratchDir() + "/saved.tune";
  if (!db.save(saved).empty())
    __builtin_trap();
  tilt::TuningDb again;
  if (!tilt::TuningDb::load(saved, again).empty() ||
      again.records.size() != db.records.size())
    __builtin_trap();
  tilt::AttentionSpec spec;
  spec.heads = spec.kvHeads = 8;
  spec.headDim = 64;
  (void)db.lookup(spec, 512);
  // The decode rule, contiguous and paged (the paged path falls back to
  // contiguous records).
  spec.kvHeads = 2;
  for (int64_t page : {0, 16})
    for (int64_t sq : {1, 16}) {
      spec.pageSize = page;
      if (const tilt::TuningRecord *r = db.lookupDecode(spec, sq, 4096);
          r && (!r->key.decode() || (r->key.pageSize > 0 && page == 0)))
        __builtin_trap();
    }
  return 0;
}
