// Branch-free float32 sin/cos that gcc vectorizes inside `#pragma omp simd` loops.
// The same algorithm and constants as kernels/envs/_math.py (Cody-Waite reduction by
// pi/2, Cephes sinf/cosf polynomials, quadrant select); ~1 ulp for |x| <= 8192.
#pragma once
#include <cmath>
#include <cstdint>

namespace metarl {

inline void sincos_f32(float x, float* s_out, float* c_out) {
  const float j = std::floor(x * 0.636619772367581343f + 0.5f);
  const float r = ((x - j * 1.5703125f) - j * 4.837512969970703125e-4f) - j * 7.54978995489188216e-8f;
  const int32_t q = static_cast<int32_t>(j) & 3;
  const float r2 = r * r;
  const float s = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f + r2 * -1.9515295891e-4f));
  const float c = 1.0f - 0.5f * r2 + r2 * r2 * (4.166664568298827e-2f + r2 * (-1.388731625493765e-3f + r2 * 2.443315711809948e-5f));
  float sn = (q & 1) == 0 ? s : c;
  float cs = (q & 1) == 0 ? c : s;
  sn = (q & 2) != 0 ? -sn : sn;
  cs = ((q + 1) & 2) != 0 ? -cs : cs;
  *s_out = sn;
  *c_out = cs;
}

}  // namespace metarl
