// CartPole-v1 step with per-env physics and gymnasium autoreset.
// Same math, argument order and random numbers as kernels/envs/cartpole.py (_step_nb):
// a branch-free body (selects; vectorizable sin/cos from simd_math.h) in a
// `#pragma omp simd` loop over a chunk of envs, chunks spread over OpenMP threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "buffers.h"
#include "rng.h"
#include "simd_math.h"

namespace metarl {

constexpr int kNextStep = 0, kSameStep = 1;
constexpr float kXThreshold = 2.4f;
constexpr float kThetaThreshold = static_cast<float>(12 * 2 * M_PI / 360);
constexpr int64_t kChunk = 2048;  // envs per task; below 2 chunks one thread does all

struct CartPoleBuffers {
  float* state;
  int32_t* elapsed;
  uint8_t* needs_reset;
  int64_t* counter;
  const float *gravity, *masscart, *masspole, *length, *force_mag, *tau;
  const int64_t* action;
  const int64_t* key;
  float* obs;
  float* reward;
  uint8_t* terminated;
  uint8_t* truncated;
  float* final_obs;
};

static inline float reset_value(int64_t key, int64_t counter, uint32_t lane) {
  return -0.05f + 0.1f * uniform(key, counter, lane);
}

template <int kMode>
static void step_range(const CartPoleBuffers& b, int64_t n, int64_t begin, int64_t end, int64_t max_steps) {
  // Plain locals with __restrict so gcc sees no aliasing and if-converts every select.
  float* __restrict x_s = b.state;
  float* __restrict x_dot_s = b.state + n;
  float* __restrict theta_s = b.state + 2 * n;
  float* __restrict theta_dot_s = b.state + 3 * n;
  int32_t* __restrict elapsed = b.elapsed;
  uint8_t* __restrict needs_reset = b.needs_reset;
  int64_t* __restrict counter = b.counter;
  const float* __restrict gravity = b.gravity;
  const float* __restrict masscart = b.masscart;
  const float* __restrict masspole = b.masspole;
  const float* __restrict length = b.length;
  const float* __restrict force_mag = b.force_mag;
  const float* __restrict tau = b.tau;
  const int64_t* __restrict action = b.action;
  const int64_t* __restrict key = b.key;
  float* __restrict obs = b.obs;
  float* __restrict reward = b.reward;
  uint8_t* __restrict terminated = b.terminated;
  uint8_t* __restrict truncated = b.truncated;
  float* __restrict final_obs = b.final_obs;
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float x = x_s[i], x_dot = x_dot_s[i], theta = theta_s[i], theta_dot = theta_dot_s[i];
    const float f = action[i] == 1 ? force_mag[i] : -force_mag[i];
    float sintheta, costheta;
    sincos_f32(theta, &sintheta, &costheta);
    const float mp = masspole[i], len = length[i], dt = tau[i];
    const float total_mass = mp + masscart[i];
    const float polemass_length = mp * len;
    const float temp = (f + polemass_length * theta_dot * theta_dot * sintheta) / total_mass;
    const float thetaacc =
        (gravity[i] * sintheta - costheta * temp) / (len * (4.0f / 3.0f - mp * costheta * costheta / total_mass));
    const float xacc = temp - polemass_length * thetaacc * costheta / total_mass;
    x = x + dt * x_dot;
    x_dot = x_dot + dt * xacc;
    theta = theta + dt * theta_dot;
    theta_dot = theta_dot + dt * thetaacc;
    const int32_t e = elapsed[i] + 1;
    const bool skipped = (kMode == kNextStep) & (needs_reset[i] != 0);  // reset instead of stepping
    const bool term = !skipped & ((x < -kXThreshold) | (x > kXThreshold) | (theta < -kThetaThreshold) |
                                  (theta > kThetaThreshold));
    const bool trunc = !skipped & (max_steps > 0) & (e >= max_steps);
    const bool done = term | trunc;
    const bool do_reset = skipped | ((kMode == kSameStep) & done);
    if (kMode == kSameStep) {
      final_obs[i * 4 + 0] = done ? x : 0.0f;
      final_obs[i * 4 + 1] = done ? x_dot : 0.0f;
      final_obs[i * 4 + 2] = done ? theta : 0.0f;
      final_obs[i * 4 + 3] = done ? theta_dot : 0.0f;
    }
    const int64_t c = counter[i], k = key[i];
    const float r0 = reset_value(k, c, 0), r1 = reset_value(k, c, 1);
    const float r2 = reset_value(k, c, 2), r3 = reset_value(k, c, 3);
    x = do_reset ? r0 : x;
    x_dot = do_reset ? r1 : x_dot;
    theta = do_reset ? r2 : theta;
    theta_dot = do_reset ? r3 : theta_dot;
    counter[i] = c + static_cast<int64_t>(do_reset);
    elapsed[i] = do_reset ? 0 : e;
    needs_reset[i] = (kMode != kSameStep) & done;
    reward[i] = skipped ? 0.0f : 1.0f;
    terminated[i] = term;
    truncated[i] = trunc;
    x_s[i] = x;
    x_dot_s[i] = x_dot;
    theta_s[i] = theta;
    theta_dot_s[i] = theta_dot;
    obs[i * 4 + 0] = x;
    obs[i * 4 + 1] = x_dot;
    obs[i * 4 + 2] = theta;
    obs[i * 4 + 3] = theta_dot;
  }
}

// The first i with action[i] outside {0, 1}, or n (one vectorized pass when all are valid).
static int64_t first_bad_action(const int64_t* action, int64_t n) {
  uint64_t bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint64_t>(action[i]) > 1u;
  if (!bad) return n;
  int64_t i = 0;
  while (action[i] == 0 || action[i] == 1) ++i;
  return i;
}

template <int kMode>
static void step_all(const CartPoleBuffers& b, int64_t n, int64_t max_steps) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    step_range<kMode>(b, n, c * kChunk, std::min(n, (c + 1) * kChunk), max_steps);
  }
}

void cartpole_step(py::array state_a, py::array elapsed_a, py::array needs_reset_a, py::array counter_a,
                   py::array gravity_a, py::array masscart_a, py::array masspole_a, py::array length_a,
                   py::array force_mag_a, py::array tau_a, py::array action_a, py::array key_a, py::array obs_a,
                   py::array reward_a, py::array terminated_a, py::array truncated_a, py::array final_obs_a,
                   int64_t max_steps, int64_t mode) {
  const int64_t n = state_a.ndim() == 2 ? state_a.shape(1) : -1;
  if (n < 0 || state_a.shape(0) != 4) throw py::value_error("state: expected shape [4, N]");
  if (mode < 0 || mode > 2) throw py::value_error("mode: expected 0 (next_step), 1 (same_step) or 2 (disabled)");
  CartPoleBuffers b{
      buffer<float>(state_a, "state", 4, n),
      buffer<int32_t>(elapsed_a, "elapsed", n),
      bool_buffer(needs_reset_a, "needs_reset", n),
      buffer<int64_t>(counter_a, "counter", n),
      buffer<float>(gravity_a, "gravity", n),
      buffer<float>(masscart_a, "masscart", n),
      buffer<float>(masspole_a, "masspole", n),
      buffer<float>(length_a, "length", n),
      buffer<float>(force_mag_a, "force_mag", n),
      buffer<float>(tau_a, "tau", n),
      buffer<int64_t>(action_a, "action", n),
      buffer<int64_t>(key_a, "key", n),
      buffer<float>(obs_a, "obs", n, 4),
      buffer<float>(reward_a, "reward", n),
      bool_buffer(terminated_a, "terminated", n),
      bool_buffer(truncated_a, "truncated", n),
      buffer<float>(final_obs_a, "final_obs", mode == kSameStep ? n : 0, 4),
  };
  // The step maps any action but 1 to a push left: refuse the others here, since the extension is public.
  const int64_t bad = first_bad_action(b.action, n);
  if (bad < n) {
    throw py::value_error("action: expected 0 (push left) or 1 (push right), got " + std::to_string(b.action[bad]) +
                          " at env " + std::to_string(bad));
  }
  py::gil_scoped_release release;
  if (mode == kNextStep) {
    step_all<kNextStep>(b, n, max_steps);
  } else if (mode == kSameStep) {
    step_all<kSameStep>(b, n, max_steps);
  } else {
    step_all<2>(b, n, max_steps);
  }
}

}  // namespace metarl
