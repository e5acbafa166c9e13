// CartPole-v1 step with per-env physics and gymnasium autoreset.
// Same math, argument order and random numbers as kernels/envs/cartpole.py (_step_nb):
// a branch-free body (selects; vectorizable sin/cos from simd_math.h) in a
// `#pragma omp simd` loop over a chunk of envs, chunks spread over OpenMP threads.
#include <algorithm>
#include <cmath>
#include <cstdint>

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
  bool* needs_reset;
  int64_t* counter;
  const float *gravity, *masscart, *masspole, *length, *force_mag, *tau;
  const int64_t* action;
  const int64_t* key;
  float* obs;
  float* reward;
  bool* terminated;
  bool* truncated;
  float* final_obs;
};

static inline float reset_value(int64_t key, int64_t counter, uint32_t lane) {
  return -0.05f + 0.1f * uniform(key, counter, lane);
}

template <int kMode>
static void step_range(const CartPoleBuffers& b, int64_t n, int64_t begin, int64_t end, int64_t max_steps) {
  float* __restrict state = b.state;
  float* __restrict obs = b.obs;
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float x = state[i], x_dot = state[n + i], theta = state[2 * n + i], theta_dot = state[3 * n + i];
    const float f = b.action[i] == 1 ? b.force_mag[i] : -b.force_mag[i];
    float sintheta, costheta;
    sincos_f32(theta, &sintheta, &costheta);
    const float masspole = b.masspole[i], length = b.length[i], tau = b.tau[i];
    const float total_mass = masspole + b.masscart[i];
    const float polemass_length = masspole * length;
    const float temp = (f + polemass_length * theta_dot * theta_dot * sintheta) / total_mass;
    const float thetaacc = (b.gravity[i] * sintheta - costheta * temp) /
                           (length * (4.0f / 3.0f - masspole * costheta * costheta / total_mass));
    const float xacc = temp - polemass_length * thetaacc * costheta / total_mass;
    x = x + tau * x_dot;
    x_dot = x_dot + tau * xacc;
    theta = theta + tau * theta_dot;
    theta_dot = theta_dot + tau * thetaacc;
    const int32_t e = b.elapsed[i] + 1;
    const bool skipped = kMode == kNextStep && b.needs_reset[i];  // reset instead of stepping
    const bool term = !skipped & ((x < -kXThreshold) | (x > kXThreshold) | (theta < -kThetaThreshold) |
                                  (theta > kThetaThreshold));
    const bool trunc = !skipped & (max_steps > 0) & (e >= max_steps);
    const bool done = term | trunc;
    const bool do_reset = skipped | (kMode == kSameStep && done);
    if (kMode == kSameStep) {
      b.final_obs[i * 4 + 0] = done ? x : 0.0f;
      b.final_obs[i * 4 + 1] = done ? x_dot : 0.0f;
      b.final_obs[i * 4 + 2] = done ? theta : 0.0f;
      b.final_obs[i * 4 + 3] = done ? theta_dot : 0.0f;
    }
    const int64_t c = b.counter[i], k = b.key[i];
    x = do_reset ? reset_value(k, c, 0) : x;
    x_dot = do_reset ? reset_value(k, c, 1) : x_dot;
    theta = do_reset ? reset_value(k, c, 2) : theta;
    theta_dot = do_reset ? reset_value(k, c, 3) : theta_dot;
    b.counter[i] = c + (do_reset ? 1 : 0);
    b.elapsed[i] = do_reset ? 0 : e;
    b.needs_reset[i] = kMode != kSameStep && done;
    b.reward[i] = skipped ? 0.0f : 1.0f;
    b.terminated[i] = term;
    b.truncated[i] = trunc;
    state[i] = x;
    state[n + i] = x_dot;
    state[2 * n + i] = theta;
    state[3 * n + i] = theta_dot;
    obs[i * 4 + 0] = x;
    obs[i * 4 + 1] = x_dot;
    obs[i * 4 + 2] = theta;
    obs[i * 4 + 3] = theta_dot;
  }
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
                   int64_t max_steps, int mode) {
  const int64_t n = state_a.ndim() == 2 ? state_a.shape(1) : -1;
  if (n < 0 || state_a.shape(0) != 4) throw py::value_error("state: expected shape [4, N]");
  if (mode < 0 || mode > 2) throw py::value_error("mode: expected 0 (next_step), 1 (same_step) or 2 (disabled)");
  CartPoleBuffers b{
      buffer<float>(state_a, "state", 4, n),
      buffer<int32_t>(elapsed_a, "elapsed", n),
      buffer<bool>(needs_reset_a, "needs_reset", n),
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
      buffer<bool>(terminated_a, "terminated", n),
      buffer<bool>(truncated_a, "truncated", n),
      buffer<float>(final_obs_a, "final_obs", mode == kSameStep ? n : 0, 4),
  };
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
