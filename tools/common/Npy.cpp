//===- Npy.cpp - Reading and writing NumPy .npy files ---------------------===//

#include "Npy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <cstring>
#include <fstream>
#include <iterator>

namespace tilt::tools {

int64_t NpyArray::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::string NpyArray::shapeString() const {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

namespace {

/// The value of `key` in the header's Python dict literal, unparsed.
std::string dictValue(const std::string &header, const std::string &key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos)
    return {};
  size_t colon = header.find(':', k);
  if (colon == std::string::npos)
    return {};
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos)
    return {};
  char open = header[start];
  size_t end = open == '(' ? header.find(')', start) + 1
               : open == '\'' ? header.find('\'', start + 1) + 1
                              : header.find_first_of(",}", start);
  if (end == std::string::npos || end == 0)
    return {};
  return header.substr(start, end - start);
}

template <typename T>
void widen(const char *src, int64_t n, std::vector<double> &out) {
  out.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    out[i] = static_cast<double>(v);
  }
}

} // namespace

std::string readNpy(const std::string &path, NpyArray &out) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return fmt::format("{}: cannot open file", path);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    return fmt::format("{}: not a .npy file (bad magic)", path);
  unsigned major = static_cast<unsigned char>(bytes[6]);
  size_t headerLen, headerStart;
  if (major == 1) {
    headerLen = static_cast<unsigned char>(bytes[8]) |
                (static_cast<unsigned char>(bytes[9]) << 8);
    headerStart = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12)
      return fmt::format("{}: truncated .npy header", path);
    headerLen = 0;
    for (int b = 3; b >= 0; --b)
      headerLen = (headerLen << 8) | static_cast<unsigned char>(bytes[8 + b]);
    headerStart = 12;
  } else {
    return fmt::format("{}: unsupported .npy version {}", path, major);
  }
  if (bytes.size() < headerStart + headerLen)
    return fmt::format("{}: truncated .npy header", path);
  std::string header = bytes.substr(headerStart, headerLen);

  std::string descr = dictValue(header, "descr");
  std::string order = dictValue(header, "fortran_order");
  std::string shape = dictValue(header, "shape");
  if (descr.size() < 2 || order.empty() || shape.empty())
    return fmt::format("{}: malformed .npy header", path);
  out.dtype = descr.substr(1, descr.size() - 2);
  if (order != "False")
    return fmt::format("{}: Fortran-ordered arrays are not supported; save "
                       "a C-ordered array",
                       path);
  out.shape.clear();
  if (shape.front() != '(' || shape.back() != ')')
    return fmt::format("{}: malformed .npy shape '{}'", path, shape);
  // Dimensions are non-negative integers whose product (in bytes) fits the
  // file: anything else is an error, never an exception or an overflow.
  uint64_t count = 1;
  for (size_t i = 1; i + 1 < shape.size();) {
    size_t j = shape.find_first_of(",)", i);
    std::string tok = shape.substr(i, j - i);
    tok.erase(0, tok.find_first_not_of(' '));
    tok.erase(tok.find_last_not_of(' ') + 1);
    if (!tok.empty()) {
      int64_t d = -1;
      auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), d);
      if (ec != std::errc() || end != tok.data() + tok.size() || d < 0)
        return fmt::format("{}: malformed .npy shape '{}' (dimensions are "
                           "non-negative integers)",
                           path, shape);
      if (d != 0 && count > (uint64_t(1) << 40) / uint64_t(d))
        return fmt::format("{}: .npy shape {} is too large", path, shape);
      count *= uint64_t(d);
      out.shape.push_back(d);
    }
    i = j + 1;
  }

  const char *data = bytes.data() + headerStart + headerLen;
  size_t avail = bytes.size() - headerStart - headerLen;
  int64_t n = out.numElements();
  struct Kind {
    const char *descr;
    size_t width;
    void (*load)(const char *, int64_t, std::vector<double> &);
  };
  static const Kind kinds[] = {
      {"<f4", 4, widen<float>},   {"<f8", 8, widen<double>},
      {"<i4", 4, widen<int32_t>}, {"<i8", 8, widen<int64_t>},
      {"|u1", 1, widen<uint8_t>}, {"|b1", 1, widen<uint8_t>},
      {"|i1", 1, widen<int8_t>},
  };
  for (const Kind &k : kinds) {
    if (out.dtype != k.descr)
      continue;
    if (avail < static_cast<size_t>(n) * k.width)
      return fmt::format("{}: truncated data: shape {} needs {} bytes, file "
                         "has {}",
                         path, out.shapeString(), n * k.width, avail);
    k.load(data, n, out.values);
    return {};
  }
  return fmt::format("{}: dtype '{}' is not supported (use float32, float64, "
                     "int32, int64, uint8 or bool)",
                     path, out.dtype);
}

std::string writeNpyF32(const std::string &path,
                        const std::vector<int64_t> &shape,
                        const std::vector<float> &values) {
  // numpy writes a 1-d shape as "(n,)".
  std::string dims = shape.size() == 1 ? fmt::format("{},", shape[0])
                                       : fmt::format("{}", fmt::join(shape, ", "));
  std::string header = fmt::format(
      "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", dims);
  // Pad so the data starts on a 64-byte boundary, as numpy does.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream os(path, std::ios::binary);
  if (!os)
    return fmt::format("{}: cannot open for writing", path);
  os.write("\x93NUMPY\x01\x00", 8);
  char len[2] = {static_cast<char>(header.size() & 0xff),
                 static_cast<char>(header.size() >> 8)};
  os.write(len, 2);
  os << header;
  os.write(reinterpret_cast<const char *>(values.data()),
           static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!os)
    return fmt::format("{}: write failed", path);
  return {};
}

} // namespace tilt::tools
