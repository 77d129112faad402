//===- TiltDialect.cpp - tilt dialect and attributes ----------------------===//

#include "tilt/Dialect/Tilt/IR/Tilt.h"
#include "tilt/KernelCompiler.h"
#include "tilt/TilePolicy.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::tilt;

#include "tilt/Dialect/Tilt/IR/TiltEnums.cpp.inc"
#include "tilt/Dialect/Tilt/IR/TiltOpsDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "tilt/Dialect/Tilt/IR/TiltAttrs.cpp.inc"

// The IR's variant enum mirrors the core's, value for value and name for
// name: code on both sides converts by value (Configs.h toCore).
#define TILT_SAME_VARIANT(ir, core)                                            \
  static_assert(static_cast<int>(KernelVariant::ir) ==                         \
                static_cast<int>(::tilt::KernelVariant::core))
TILT_SAME_VARIANT(cpu_avx2, CpuAvx2);
TILT_SAME_VARIANT(cpu_avx512, CpuAvx512);
TILT_SAME_VARIANT(cpu_amx, CpuAmx);
TILT_SAME_VARIANT(gpu_sm80, GpuSm80);
TILT_SAME_VARIANT(gpu_sm90a, GpuSm90a);
TILT_SAME_VARIANT(cpu_decode_avx2, CpuDecodeAvx2);
TILT_SAME_VARIANT(cpu_decode_avx512, CpuDecodeAvx512);
TILT_SAME_VARIANT(cpu_bwd_avx2, CpuBwdAvx2);
TILT_SAME_VARIANT(cpu_bwd_avx512, CpuBwdAvx512);
TILT_SAME_VARIANT(gpu_decode_sm80, GpuDecodeSm80);
TILT_SAME_VARIANT(gpu_bwd_sm80, GpuBwdSm80);
TILT_SAME_VARIANT(cpu_avx512bf16, CpuAvx512Bf16);
TILT_SAME_VARIANT(cpu_bwd_avx512bf16, CpuBwdAvx512Bf16);
#undef TILT_SAME_VARIANT

bool mlir::tilt::isBackwardVariant(KernelVariant v) {
  // (The enums agree value for value: TILT_SAME_VARIANT above.)
  return ::tilt::isBackwardVariant(static_cast<::tilt::KernelVariant>(v));
}

bool mlir::tilt::isDecodeVariant(KernelVariant v) {
  return v == KernelVariant::cpu_decode_avx2 ||
         v == KernelVariant::cpu_decode_avx512 ||
         v == KernelVariant::gpu_decode_sm80;
}

void TiltDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "tilt/Dialect/Tilt/IR/TiltAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "tilt/Dialect/Tilt/IR/TiltOps.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// BiasAttr
//===----------------------------------------------------------------------===//

static constexpr double kDefaultMaxBias = 8.0;

Attribute BiasAttr::parse(AsmParser &parser, Type) {
  if (parser.parseLess())
    return {};
  StringRef kindWord;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseKeyword(&kindWord))
    return {};
  std::optional<::tilt::BiasKind> kind = ::tilt::parseBiasKind(kindWord);
  if (!kind) {
    parser.emitError(loc, "unknown bias kind '")
        << kindWord
        << "', expected none, alibi, alibi_symmetric or alibi_positions";
    return {};
  }

  ::tilt::SlopeSource slopes = ::tilt::SlopeSource::Standard;
  double maxBias = kDefaultMaxBias;
  int64_t headOffset = 0, totalHeads = 0;
  llvm::StringSet<> seen;
  while (succeeded(parser.parseOptionalComma())) {
    StringRef key;
    loc = parser.getCurrentLocation();
    if (parser.parseKeyword(&key) || parser.parseEqual())
      return {};
    if (!seen.insert(key).second) {
      parser.emitError(loc, "duplicate key '") << key << "' in #tilt.bias";
      return {};
    }
    if (key == "slopes") {
      StringRef word;
      SMLoc wordLoc = parser.getCurrentLocation();
      if (parser.parseKeyword(&word))
        return {};
      std::optional<::tilt::SlopeSource> src = ::tilt::parseSlopeSource(word);
      if (!src) {
        parser.emitError(wordLoc, "unknown slopes '")
            << word << "', expected standard or custom";
        return {};
      }
      slopes = *src;
    } else if (key == "max_bias") {
      if (parser.parseFloat(maxBias))
        return {};
    } else if (key == "head_offset") {
      if (parser.parseInteger(headOffset))
        return {};
    } else if (key == "total_heads") {
      if (parser.parseInteger(totalHeads))
        return {};
    } else {
      parser.emitError(loc, "unknown key '")
          << key
          << "' in #tilt.bias, expected slopes, max_bias, head_offset or "
             "total_heads";
      return {};
    }
  }
  if (parser.parseGreater())
    return {};
  return BiasAttr::get(parser.getContext(), *kind, slopes, APFloat(maxBias),
                       headOffset, totalHeads);
}

void BiasAttr::print(AsmPrinter &printer) const {
  printer << '<' << ::tilt::toString(getKind());
  if (getSlopes() != ::tilt::SlopeSource::Standard)
    printer << ", slopes = " << ::tilt::toString(getSlopes());
  if (getMaxBiasValue() != kDefaultMaxBias) {
    printer << ", max_bias = ";
    printer.printFloat(getMaxBias());
  }
  if (getHeadOffset() != 0)
    printer << ", head_offset = " << getHeadOffset();
  if (getTotalHeads() != 0)
    printer << ", total_heads = " << getTotalHeads();
  printer << '>';
}

//===----------------------------------------------------------------------===//
// TileConfigAttr
//===----------------------------------------------------------------------===//

LogicalResult
TileConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                       KernelVariant variant, int64_t blockM, int64_t blockN,
                       int64_t numWarps, int64_t numStages) {
  auto isBlock = [](int64_t b) {
    return b >= 16 && b <= 256 && llvm::isPowerOf2_64(b);
  };
  if (!isBlock(blockM))
    return emitError() << "block_m must be a power of two from 16 to 256, got "
                       << blockM;
  if (!isBlock(blockN))
    return emitError() << "block_n must be a power of two from 16 to 256, got "
                       << blockN;
  bool gpu = variant == KernelVariant::gpu_sm80 ||
             variant == KernelVariant::gpu_sm90a ||
             variant == KernelVariant::gpu_decode_sm80 ||
             variant == KernelVariant::gpu_bwd_sm80;
  // The CPU decode kernels' num_stages: TilePolicy.h's kCpuDecodeMaxStages.
  const bool cpuDecode = variant == KernelVariant::cpu_decode_avx2 ||
                         variant == KernelVariant::cpu_decode_avx512;
  if (cpuDecode && (numStages < 0 || numStages > ::tilt::kCpuDecodeMaxStages))
    return emitError() << "num_stages must be 0, 1 or 2 for "
                       << stringifyKernelVariant(variant) << ", got "
                       << numStages;
  if (cpuDecode && numWarps != 0)
    return emitError() << "num_warps applies to gpu variants only, not "
                       << stringifyKernelVariant(variant);
  if (cpuDecode)
    return success();
  if (!gpu) {
    if (numWarps != 0 || numStages != 0)
      return emitError() << "num_warps and num_stages apply to gpu variants "
                            "only, not "
                         << stringifyKernelVariant(variant);
    return success();
  }
  if (variant == KernelVariant::gpu_sm90a ? numWarps != 4 && numWarps != 8
                                          : numWarps != 1 && numWarps != 2 &&
                                                numWarps != 4 && numWarps != 8)
    return emitError() << "num_warps must be "
                       << (variant == KernelVariant::gpu_sm90a
                               ? "4 or 8 (whole warpgroups)"
                               : "1, 2, 4 or 8")
                       << " for " << stringifyKernelVariant(variant)
                       << ", got " << numWarps;
  if (numStages < 1 || numStages > 8)
    return emitError() << "num_stages must be from 1 to 8 for gpu variants, "
                          "got "
                       << numStages;
  if (blockM % (16 * numWarps) != 0)
    return emitError() << "block_m (" << blockM
                       << ") must be a multiple of 16 * num_warps ("
                       << 16 * numWarps << ")";
  return success();
}
