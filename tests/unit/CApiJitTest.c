/*===- CApiJitTest.c - The C API end to end: JIT-compile and run ---------===*\
|*                                                                            *|
|* Plain C: creates Tilt's JIT compiler and a runtime, runs a small GQA      *|
|* ALiBi causal attention (compiled on the spot into a private cache) and    *|
|* compares it with a float64 loop written here from ALIBI.md, then runs it  *|
|* again over a paged KV cache (same keys, second of two pages) and expects  *|
|* the same output, and with q and o strided as [B, S, H, D]. Exit 0 on      *|
|* success; prints what is wrong and exits 1 otherwise.                       *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#include "tilt/tilt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 1, H = 2, HKV = 1, S = 5, D = 16 };

static int fail(const char *what) {
  fprintf(stderr, "CApiJitTest: %s\n", what);
  return 1;
}

int main(void) {
  char error[256];
  if (tilt_api_version() != TILT_API_VERSION)
    return fail("tilt_api_version() differs from this header's "
                "TILT_API_VERSION");
  if (tilt_compiler_create("x86-64-v9", error, sizeof error) != NULL)
    return fail("a bad cpu_class must give NULL");
  if (strstr(error, "cpu_class must be x86-64-v3") == NULL)
    return fail(error);

  char cache[] = "/tmp/tilt-capi-jit-XXXXXX";
  if (mkdtemp(cache) == NULL)
    return fail("mkdtemp");
  tilt_compiler *jit = tilt_compiler_create(NULL, error, sizeof error);
  if (jit == NULL)
    return fail(error);
  tilt_runtime *rt = tilt_runtime_create(cache, 1, jit);
  if (rt == NULL)
    return fail("tilt_runtime_create");

  static float q[B * H * S * D], k[B * HKV * S * D], v[B * HKV * S * D],
      o[B * H * S * D], lse[B * H * S], dO[B * H * S * D], dq[B * H * S * D],
      dk[B * HKV * S * D], dv[B * HKV * S * D];
  static double dvRef[B * HKV * S * D];
  unsigned seed = 12345;
  for (int i = 0; i < B * H * S * D; ++i) {
    seed = seed * 1103515245u + 12345u;
    q[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
  }
  for (int i = 0; i < B * HKV * S * D; ++i) {
    seed = seed * 1103515245u + 12345u;
    k[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
    seed = seed * 1103515245u + 12345u;
    v[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
  }
  for (int i = 0; i < B * H * S * D; ++i) {
    seed = seed * 1103515245u + 12345u;
    dO[i] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
  }

  tilt_spec spec;
  memset(&spec, 0, sizeof spec);
  spec.heads = H;
  spec.kv_heads = HKV;
  spec.head_dim = D;
  spec.dtype = TILT_DTYPE_F32;
  spec.causal = 1;
  spec.bias = TILT_BIAS_ALIBI;
  tilt_attention_args args;
  memset(&args, 0, sizeof args);
  args.q = (tilt_tensor){q, 4, {B, H, S, D}, {0}};
  args.k = (tilt_tensor){k, 4, {B, HKV, S, D}, {0}};
  args.v = (tilt_tensor){v, 4, {B, HKV, S, D}, {0}};
  args.o = (tilt_tensor){o, 4, {B, H, S, D}, {0}};
  args.lse = (tilt_tensor){lse, 3, {B, H, S}, {0}};
  if (tilt_attention(rt, &spec, &args) != 0)
    return fail(tilt_runtime_last_error(rt));
  /* The backward: dv = P^T dO summed over the group is checked below. */
  tilt_backward_args grads;
  memset(&grads, 0, sizeof grads);
  grads.grad_o = (tilt_tensor){dO, 4, {B, H, S, D}, {0}};
  grads.dq = (tilt_tensor){dq, 4, {B, H, S, D}, {0}};
  grads.dk = (tilt_tensor){dk, 4, {B, HKV, S, D}, {0}};
  grads.dv = (tilt_tensor){dv, 4, {B, HKV, S, D}, {0}};
  if (tilt_attention_backward(rt, &spec, &args, NULL) == 0 ||
      strcmp(tilt_runtime_last_error(rt), "grads: null pointer") != 0)
    return fail("a null grads must be refused");
  if (tilt_attention_backward(rt, &spec, &args, &grads) != 0)
    return fail(tilt_runtime_last_error(rt));

  /* ALIBI.md: H = 2 -> slopes 2^-4, 2^-8; bias m_h * (j - i); causal. */
  double maxErr = 0;
  for (int h = 0; h < H; ++h) {
    double m = pow(2.0, -8.0 * (h + 1) / 2.0);
    for (int i = 0; i < S; ++i) {
      double s[S], mx = -INFINITY, sum = 0;
      for (int j = 0; j <= i; ++j) {
        double dot = 0;
        for (int d = 0; d < D; ++d)
          dot += (double)q[(h * S + i) * D + d] * k[j * D + d];
        s[j] = dot / sqrt((double)D) + m * (j - i);
        mx = s[j] > mx ? s[j] : mx;
      }
      for (int j = 0; j <= i; ++j)
        sum += exp(s[j] - mx);
      for (int d = 0; d < D; ++d) {
        double ref = 0;
        for (int j = 0; j <= i; ++j) {
          ref += exp(s[j] - mx) / sum * v[j * D + d];
          dvRef[j * D + d] += exp(s[j] - mx) / sum * dO[(h * S + i) * D + d];
        }
        double err = fabs(ref - o[(h * S + i) * D + d]);
        maxErr = err > maxErr ? err : maxErr;
      }
    }
  }
  double dvErr = 0;
  for (int i = 0; i < B * HKV * S * D; ++i) {
    double err = fabs(dvRef[i] - dv[i]);
    dvErr = err > dvErr ? err : dvErr;
  }

  /* q and o as [B, S, H, D] memory, passed as [B, H, S, D] views through
   * their strides: the same kernel on the same values, so the same bits. */
  static float qs[B * S * H * D], os[B * S * H * D];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < S; ++i)
      memcpy(&qs[(i * H + h) * D], &q[(h * S + i) * D], D * sizeof(float));
  args.q = (tilt_tensor){qs, 4, {B, H, S, D}, {S * H * D, D, H * D, 1}};
  args.o = (tilt_tensor){os, 4, {B, H, S, D}, {S * H * D, D, H * D, 1}};
  if (tilt_attention(rt, &spec, &args) != 0)
    return fail(tilt_runtime_last_error(rt));
  int stridedSame = 1;
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < S; ++i)
      stridedSame &= memcmp(&os[(i * H + h) * D], &o[(h * S + i) * D],
                            D * sizeof(float)) == 0;
  args.q.strides[0] = 0; /* innermost 0: refused, naming q */
  args.q.strides[3] = 2;
  if (tilt_attention(rt, &spec, &args) == 0 ||
      strstr(tilt_runtime_last_error(rt), "q: the innermost stride must be "
                                          "1") == NULL)
    return fail("an innermost stride of 2 must be refused");
  args.q = (tilt_tensor){q, 4, {B, H, S, D}, {0}};

  /* The same keys from a paged cache [2 pages, 8, HKV, D]: page 1 holds
   * them, page 0 is never named. */
  static float kc[2 * 8 * HKV * D], vc[2 * 8 * HKV * D], o2[B * H * S * D];
  for (int i = 0; i < 2 * 8 * HKV * D; ++i)
    kc[i] = vc[i] = NAN;
  memcpy(kc + 8 * HKV * D, k, sizeof k);
  memcpy(vc + 8 * HKV * D, v, sizeof v);
  int32_t table[1] = {1}, lens[1] = {S};
  spec.page_size = 8;
  args.k = (tilt_tensor){kc, 4, {2, 8, HKV, D}, {0}};
  args.v = (tilt_tensor){vc, 4, {2, 8, HKV, D}, {0}};
  args.block_table = (tilt_tensor){table, 2, {B, 1}, {0}};
  args.context_lens = (tilt_tensor){lens, 1, {B}, {0}};
  args.o = (tilt_tensor){o2, 4, {B, H, S, D}, {0}};
  if (tilt_attention(rt, &spec, &args) != 0)
    return fail(tilt_runtime_last_error(rt));
  double pagedDiff = 0;
  for (int i = 0; i < B * H * S * D; ++i) {
    double diff = fabs((double)o2[i] - o[i]);
    pagedDiff = diff > pagedDiff || diff != diff ? diff : pagedDiff;
  }
  tilt_runtime_destroy(rt);
  tilt_compiler_destroy(jit);
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf %s", cache);
  if (system(cmd) != 0)
    return fail("cannot remove the cache");
  printf("C API JIT run: max abs error vs float64 %.3g (bound 1e-4); "
         "backward dv %.3g (bound 1e-4); paged vs dense %.3g (bound 1e-6); "
         "strided [B, S, H, D] q/o %s\n",
         maxErr, dvErr, pagedDiff, stridedSame ? "bit-identical" : "DIFFER");
  if (!stridedSame)
    return fail("the strided run differs from the row-major one");
  if (!(pagedDiff <= 1e-6))
    return fail("the paged run differs from the dense one");
  if (maxErr > 1e-4)
    return fail("error above 1e-4");
  return dvErr <= 1e-4 ? 0 : fail("dv error above 1e-4");
}
