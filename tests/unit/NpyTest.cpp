//===- NpyTest.cpp - .npy reading and writing ------------------------------===//

#include "Npy.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace {

std::string tempPath(const char *name) {
  return (std::filesystem::temp_directory_path() /
          (std::string("tilt-npytest-") + name))
      .string();
}

TEST(Npy, WriteThenReadFloat32) {
  std::string path = tempPath("a.npy");
  std::vector<float> values{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 1e-3f};
  ASSERT_EQ(tilt::tools::writeNpyF32(path, {2, 3}, values), "");
  tilt::tools::NpyArray a;
  ASSERT_EQ(tilt::tools::readNpy(path, a), "");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.dtype, "<f4");
  ASSERT_EQ(a.values.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_EQ(a.values[i], values[i]);
  // Data starts on a 64-byte boundary, as numpy writes it.
  EXPECT_EQ((std::filesystem::file_size(path) - values.size() * 4) % 64, 0u);
  std::remove(path.c_str());
}

TEST(Npy, OneDimensionalShape) {
  std::string path = tempPath("b.npy");
  ASSERT_EQ(tilt::tools::writeNpyF32(path, {4}, {1, 2, 3, 4}), "");
  tilt::tools::NpyArray a;
  ASSERT_EQ(tilt::tools::readNpy(path, a), "");
  EXPECT_EQ(a.shape, std::vector<int64_t>{4});
  EXPECT_EQ(a.shapeString(), "[4]");
  std::remove(path.c_str());
}

TEST(Npy, ReadsUint8MaskWrittenByHand) {
  std::string path = tempPath("mask.npy");
  std::string header =
      "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 3), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::ofstream(path, std::ios::binary)
      << std::string("\x93NUMPY\x01\x00", 8) << char(header.size()) << '\0'
      << header << std::string("\x01\x00\x01", 3);
  tilt::tools::NpyArray a;
  ASSERT_EQ(tilt::tools::readNpy(path, a), "");
  EXPECT_EQ(a.values, (std::vector<double>{1, 0, 1}));
  std::remove(path.c_str());
}

TEST(Npy, ErrorsNameTheFile) {
  tilt::tools::NpyArray a;
  EXPECT_EQ(tilt::tools::readNpy("/nonexistent/x.npy", a),
            "/nonexistent/x.npy: cannot open file");
  std::string path = tempPath("bad.npy");
  std::ofstream(path) << "not numpy at all";
  EXPECT_EQ(tilt::tools::readNpy(path, a),
            path + ": not a .npy file (bad magic)");
  // Truncated data.
  ASSERT_EQ(tilt::tools::writeNpyF32(path, {8}, std::vector<float>(8, 1.0f)),
            "");
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 32 + 12);
  EXPECT_EQ(tilt::tools::readNpy(path, a),
            path + ": truncated data: shape [8] needs 32 bytes, file has 12");
  std::remove(path.c_str());
}

/// Regressions found by tests/fuzz: a shape that is not a list of
/// non-negative integers used to throw out of std::stoll (aborting the
/// host), and a huge one to overflow the byte count.
TEST(Npy, MalformedShapesAreErrorsNotExceptions) {
  auto withShape = [](const std::string &shape) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " +
                         shape + ", }";
    header.resize(118, ' ');
    header += '\n';
    std::string path = tempPath("shape.npy");
    std::ofstream(path, std::ios::binary)
        << std::string("\x93NUMPY\x01\x00", 8) << char(header.size())
        << char(0) << header << std::string(24, '\0');
    tilt::tools::NpyArray a;
    std::string err = tilt::tools::readNpy(path, a);
    std::remove(path.c_str());
    return err.empty() ? err : err.substr(err.find(':') + 2);
  };
  EXPECT_EQ(withShape("(2, 3)"), "");
  EXPECT_EQ(withShape("(\xcb" "2, 3)"),
            "malformed .npy shape '(\xcb" "2, 3)' (dimensions are "
            "non-negative integers)");
  EXPECT_EQ(withShape("(-2, 3)"),
            "malformed .npy shape '(-2, 3)' (dimensions are non-negative "
            "integers)");
  EXPECT_EQ(withShape("(99999999999, 99999999999)"),
            ".npy shape (99999999999, 99999999999) is too large");
}

} // namespace
