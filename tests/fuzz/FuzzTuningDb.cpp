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
  return 0;
}
