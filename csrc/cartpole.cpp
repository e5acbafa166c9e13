// CartPole-v1 step with per-env physics and gymnasium autoreset.
// Same math, argument order and random numbers as kernels/envs/cartpole.py (_step_nb), bit for bit.
// A step of a chunk of envs is two passes: the dynamics, branch-free (selects; vectorizable sin/cos
// from simd_math.h) in a `#pragma omp simd` loop with no random numbers, and the resets, scalar, only
// for the envs that reset (next_step: before the dynamics, those flagged needs_reset; same_step:
// after, those that ended). Chunks are spread over OpenMP threads from kParallelMinEnvs envs on.
// One fused pass that draws every env's reset lanes and selects them vectorizes too, but costs
// ~2x the dynamics in mix32 multiplies, and gcc 12 (-march=native with AVX-512) leaves its
// next_step loop scalar: it sinks the counter/key loads under needs_reset and cannot convert that
// byte mask to the masked 64-bit loads (-fopt-info-vec: "relevant stmt not supported").
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "buffers.h"
#include "rng.h"
#include "simd_math.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace metarl {

constexpr int kNextStep = 0, kSameStep = 1;
constexpr float kXThreshold = 2.4f;
constexpr float kThetaThreshold = static_cast<float>(12 * 2 * M_PI / 360);
constexpr int64_t kChunk = 2048;  // envs per OpenMP task (~200 KB of state, params and outputs: L2-resident)
// Below this many envs one thread steps them all. On 2 idle cores a second thread saves 13% of a
// 4096-env env.step (26 -> 23 us) and 20% at 8192 (37 -> 29 us); on 2 cores shared with other
// processes its fork/join waits for a descheduled worker (a scheduler time slice, ms) and a
// 4096-env step ran ~200x slower (6e5 vs 1.3e8 env-steps/s on one thread).
constexpr int64_t kParallelMinEnvs = 8192;

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

// Env i's fresh state, drawn with its counter value (which the reset then uses up), into the
// state and the observation: the scalar half of a step, run only for the envs that reset.
static inline void reset_one(const CartPoleBuffers& b, int64_t n, int64_t i) {
  const int64_t c = b.counter[i];
  float v[4];
  for (uint32_t lane = 0; lane < 4; ++lane) v[lane] = -0.05f + 0.1f * uniform(b.key[i], c, lane);
  for (int lane = 0; lane < 4; ++lane) {
    b.state[lane * n + i] = v[lane];
    b.obs[i * 4 + lane] = v[lane];
  }
  b.counter[i] = c + 1;
}

// reset_one for every i in [begin, end) where flag_a[i] | flag_b[i] (bytes 0/1): eight envs per
// 64-bit word, skipped where none is set, the set ones found by their bit (few envs reset in a
// step: ~1 in 20 under random actions, fewer as a policy learns).
static void reset_flagged(const CartPoleBuffers& b, int64_t n, int64_t begin, int64_t end, const uint8_t* flag_a,
                          const uint8_t* flag_b) {
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    uint64_t wa, wb;
    std::memcpy(&wa, flag_a + i, 8);
    std::memcpy(&wb, flag_b + i, 8);
    for (uint64_t w = wa | wb; w != 0; w &= w - 1) reset_one(b, n, i + __builtin_ctzll(w) / 8);
  }
  for (; i < end; ++i) {
    if (flag_a[i] | flag_b[i]) reset_one(b, n, i);
  }
}

// The vectorized half of a step over envs [begin, end): dynamics, flags, clocks, state and
// observation, without random numbers. next_step: envs flagged needs_reset were reset before this
// pass and keep that state (reward 0, not done). same_step: ended envs get final_obs and elapsed 0
// here; reset_flagged then overwrites their state and observation.
template <int kMode>
static void step_dynamics(const CartPoleBuffers& b, int64_t n, int64_t begin, int64_t end, int64_t max_steps) {
  // Plain locals with __restrict so gcc sees no aliasing and if-converts every select. No counter
  // or key access here: gcc 12 cannot vectorize the masked 64-bit loads they would become.
  float* __restrict x_s = b.state;
  float* __restrict x_dot_s = b.state + n;
  float* __restrict theta_s = b.state + 2 * n;
  float* __restrict theta_dot_s = b.state + 3 * n;
  int32_t* __restrict elapsed = b.elapsed;
  uint8_t* __restrict needs_reset = b.needs_reset;
  const float* __restrict gravity = b.gravity;
  const float* __restrict masscart = b.masscart;
  const float* __restrict masspole = b.masspole;
  const float* __restrict length = b.length;
  const float* __restrict force_mag = b.force_mag;
  const float* __restrict tau = b.tau;
  const int64_t* __restrict action = b.action;
  float* __restrict obs = b.obs;
  float* __restrict reward = b.reward;
  uint8_t* __restrict terminated = b.terminated;
  uint8_t* __restrict truncated = b.truncated;
  float* __restrict final_obs = b.final_obs;
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const float x0 = x_s[i], x_dot0 = x_dot_s[i], theta0 = theta_s[i], theta_dot0 = theta_dot_s[i];
    const float f = action[i] == 1 ? force_mag[i] : -force_mag[i];
    float sintheta, costheta;
    sincos_f32(theta0, &sintheta, &costheta);
    const float mp = masspole[i], len = length[i], dt = tau[i];
    const float total_mass = mp + masscart[i];
    const float polemass_length = mp * len;
    const float temp = (f + polemass_length * theta_dot0 * theta_dot0 * sintheta) / total_mass;
    const float thetaacc =
        (gravity[i] * sintheta - costheta * temp) / (len * (4.0f / 3.0f - mp * costheta * costheta / total_mass));
    const float xacc = temp - polemass_length * thetaacc * costheta / total_mass;
    const bool skipped = (kMode == kNextStep) & (needs_reset[i] != 0);  // reset before this pass
    const float x = skipped ? x0 : x0 + dt * x_dot0;
    const float x_dot = skipped ? x_dot0 : x_dot0 + dt * xacc;
    const float theta = skipped ? theta0 : theta0 + dt * theta_dot0;
    const float theta_dot = skipped ? theta_dot0 : theta_dot0 + dt * thetaacc;
    const int32_t e = elapsed[i] + 1;
    const bool term = (!skipped) & ((x < -kXThreshold) | (x > kXThreshold) | (theta < -kThetaThreshold) |
                                  (theta > kThetaThreshold));
    const bool trunc = (!skipped) & (max_steps > 0) & (e >= max_steps);
    const bool done = term | trunc;
    if (kMode == kSameStep) {
      final_obs[i * 4 + 0] = done ? x : 0.0f;
      final_obs[i * 4 + 1] = done ? x_dot : 0.0f;
      final_obs[i * 4 + 2] = done ? theta : 0.0f;
      final_obs[i * 4 + 3] = done ? theta_dot : 0.0f;
    }
    elapsed[i] = (skipped | ((kMode == kSameStep) & done)) ? 0 : e;
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

// One step of envs [begin, end) with autoreset: the sparse reset pass and the vectorized dynamics
// pass, in the order of the mode (next_step resets before stepping, same_step after).
template <int kMode>
static void step_range(const CartPoleBuffers& b, int64_t n, int64_t begin, int64_t end, int64_t max_steps) {
  if (kMode == kNextStep) reset_flagged(b, n, begin, end, b.needs_reset, b.needs_reset);
  step_dynamics<kMode>(b, n, begin, end, max_steps);
  if (kMode == kSameStep) reset_flagged(b, n, begin, end, b.terminated, b.truncated);
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

int64_t cartpole_threads(int64_t n) {
  if (n < kParallelMinEnvs) return 1;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#ifdef _OPENMP
  return std::min<int64_t>(omp_get_max_threads(), chunks);
#else
  return 1;
#endif
}

template <int kMode>
static void step_all(const CartPoleBuffers& b, int64_t n, int64_t max_steps) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int threads = static_cast<int>(cartpole_threads(n));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
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
