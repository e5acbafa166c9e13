// CartPole-v1 step with per-env physics and gymnasium autoreset, OpenMP over envs.
// Same math, argument order and random numbers as kernels/envs/cartpole.py (_step_nb).
#include <cmath>
#include <cstdint>

#include "buffers.h"
#include "rng.h"

namespace metarl {

constexpr int kNextStep = 0, kSameStep = 1;
constexpr float kXThreshold = 2.4f;
constexpr float kThetaThreshold = static_cast<float>(12 * 2 * M_PI / 360);

static inline void reset_one(int64_t i, int64_t n, float* state, const int64_t* key, int64_t* counter) {
  for (uint32_t lane = 0; lane < 4; ++lane) state[lane * n + i] = -0.05f + 0.1f * uniform(key[i], counter[i], lane);
  counter[i] += 1;
}

static inline void observe_one(int64_t i, int64_t n, const float* state, float* out) {
  for (int j = 0; j < 4; ++j) out[i * 4 + j] = state[j * n + i];
}

void cartpole_step(py::array state_a, py::array elapsed_a, py::array needs_reset_a, py::array counter_a,
                   py::array gravity_a, py::array masscart_a, py::array masspole_a, py::array length_a,
                   py::array force_mag_a, py::array tau_a, py::array action_a, py::array key_a, py::array obs_a,
                   py::array reward_a, py::array terminated_a, py::array truncated_a, py::array final_obs_a,
                   int64_t max_steps, int mode) {
  const int64_t n = state_a.ndim() == 2 ? state_a.shape(1) : -1;
  if (n < 0 || state_a.shape(0) != 4) throw py::value_error("state: expected shape [4, N]");
  float* state = buffer<float>(state_a, "state", 4, n);
  int32_t* elapsed = buffer<int32_t>(elapsed_a, "elapsed", n);
  bool* needs_reset = buffer<bool>(needs_reset_a, "needs_reset", n);
  int64_t* counter = buffer<int64_t>(counter_a, "counter", n);
  const float* gravity = buffer<float>(gravity_a, "gravity", n);
  const float* masscart = buffer<float>(masscart_a, "masscart", n);
  const float* masspole = buffer<float>(masspole_a, "masspole", n);
  const float* length = buffer<float>(length_a, "length", n);
  const float* force_mag = buffer<float>(force_mag_a, "force_mag", n);
  const float* tau = buffer<float>(tau_a, "tau", n);
  const int64_t* action = buffer<int64_t>(action_a, "action", n);
  const int64_t* key = buffer<int64_t>(key_a, "key", n);
  float* obs = buffer<float>(obs_a, "obs", n, 4);
  float* reward = buffer<float>(reward_a, "reward", n);
  bool* terminated = buffer<bool>(terminated_a, "terminated", n);
  bool* truncated = buffer<bool>(truncated_a, "truncated", n);
  float* final_obs = buffer<float>(final_obs_a, "final_obs", mode == kSameStep ? n : 0, 4);

  py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (n >= 4096)
  for (int64_t i = 0; i < n; ++i) {
    if (mode == kNextStep && needs_reset[i]) {
      reset_one(i, n, state, key, counter);
      observe_one(i, n, state, obs);
      reward[i] = 0.0f;
      terminated[i] = false;
      truncated[i] = false;
      elapsed[i] = 0;
      needs_reset[i] = false;
      continue;
    }
    float x = state[i], x_dot = state[n + i], theta = state[2 * n + i], theta_dot = state[3 * n + i];
    const float f = action[i] == 1 ? force_mag[i] : -force_mag[i];
    const float costheta = std::cos(theta), sintheta = std::sin(theta);
    const float total_mass = masspole[i] + masscart[i];
    const float polemass_length = masspole[i] * length[i];
    const float temp = (f + polemass_length * theta_dot * theta_dot * sintheta) / total_mass;
    const float thetaacc = (gravity[i] * sintheta - costheta * temp) /
                           (length[i] * (4.0f / 3.0f - masspole[i] * costheta * costheta / total_mass));
    const float xacc = temp - polemass_length * thetaacc * costheta / total_mass;
    x = x + tau[i] * x_dot;
    x_dot = x_dot + tau[i] * xacc;
    theta = theta + tau[i] * theta_dot;
    theta_dot = theta_dot + tau[i] * thetaacc;
    state[i] = x;
    state[n + i] = x_dot;
    state[2 * n + i] = theta;
    state[3 * n + i] = theta_dot;
    const bool term = x < -kXThreshold || x > kXThreshold || theta < -kThetaThreshold || theta > kThetaThreshold;
    int32_t e = elapsed[i] + 1;
    const bool trunc = max_steps > 0 && e >= max_steps;
    reward[i] = 1.0f;
    terminated[i] = term;
    truncated[i] = trunc;
    if (mode == kSameStep) {
      if (term || trunc) {
        observe_one(i, n, state, final_obs);
        reset_one(i, n, state, key, counter);
        e = 0;
      } else {
        for (int j = 0; j < 4; ++j) final_obs[i * 4 + j] = 0.0f;
      }
    } else {
      needs_reset[i] = term || trunc;
    }
    elapsed[i] = e;
    observe_one(i, n, state, obs);
  }
}

}  // namespace metarl
