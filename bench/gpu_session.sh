#!/bin/bash
# One lent-GPU session, as run for bench/RESULTS.md: install metarl on the GPU machine's image
# (carrying wheels in .whl/ for what it lacks), run every cuda-marked test with compiled Triton
# (TRITON_INTERPRET=0), then the GPU measurements. Logs go to $OUT (or /tmp/gpu-out).
#   usage: bash bench/gpu_session.sh [tests|tune|bench|all|maml|issue23|issue22|tests,tune]   (modes join with commas)
#   tests: pytest -m cuda tests/          tune: bench/gpu_tune.py ac (tiles per precision, step vs unfused)
#   bench: bench/actor_critic.py, bench/rollout.py, bench/envs.py on the GPU      all: tests + tune + bench
#   maml: the recurrent-policy cuda tests, then bench/reproduce_maml.py on the GPU (time-boxed)
#   issue23: issue 23's GPU rows in one call (~8 min; most important first, each step time-boxed):
#     envs CartPole/Bandit at N = 2^20, 2^22 with the GPU floor; actor-critic B = 4096, H = 256 through
#     RecurrentActorCritic.step; kNN Triton vs cdist+topk at M = 1e5, 1e6, Q = 256; the actor-critic
#     kernel alone (default and split_cat tiles, profiled bf16) and kNN at M = 1e6 (gpu_tune.py ac2 knn);
#     compute-sanitizer memcheck over the cuda-marked Triton tests where the tool exists
#   issue22: the whole RL^2 loop on the GPU (~9 min): bench/train.py (metarl fused) at N = 1024..65536 (the CPU
#     rates: bench/RESULTS.md), then `metarl train rl2 --device cuda` end to end at 65,536 bandit envs and 16,384 TabularMDP
#     envs (time-boxed; the harness checkpoints on SIGTERM and the log keeps the rate), then the RL^2
#     tabular-MDP rows at the budget left (bench/reproduce_rl2.py --rows mdp-10 --device cuda)
set -u
cd "$(dirname "$0")/.."
what=",${1:-all},"
has() { case "$what" in *",$1,"*) return 0;; *) return 1;; esac; }
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || {
  tail -5 "$OUT/install.log"; echo "retrying without the C++ extension"
  METARL_NO_CPP=1 python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, triton, metarl.backend as b; print('torch', torch.__version__, 'triton', triton.__version__, b.available())"
if has tests || has all; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider -m cuda tests --continue-on-collection-errors 2>&1 \
    | tee "$OUT/cuda_tests.log" | tail -30
fi
if has tune || has all; then
  timeout 250 python3 bench/gpu_tune.py ac 2>&1 | tee "$OUT/gpu_tune.log" | grep -v "error" | tail -16
fi
if has bench || has all; then
  timeout 120 python3 bench/actor_critic.py --device cuda --hidden 256 --batch 64,1024,4096 --seconds 0.3 \
    2>&1 | tee "$OUT/bench_actor_critic.log" | tail -14
fi
if has bench; then
  timeout 120 python3 bench/rollout.py --device cuda --envs 1024,4096,16384 2>&1 | tee "$OUT/bench_rollout.log" | tail -6
  timeout 120 python3 bench/envs.py --device cuda --envs CartPole-v1,Bandit-v0 --sizes 65536,1048576 \
    2>&1 | tee "$OUT/bench_envs.log" | tail -16
fi
if has maml; then
  timeout 100 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_nn_cuda.py tests/test_rollout_cuda.py 2>&1 \
    | tee "$OUT/cuda_tests.log" | tail -4
  timeout 420 python3 bench/reproduce_maml.py --device cuda --iterations 500 --max-minutes 4 --pretrained-minutes 1 \
    --eval-tasks 40 --out "$OUT/maml.json" 2>&1 | tee "$OUT/maml.log" | tail -12
fi
if has issue23; then
  timeout 100 python3 bench/envs.py --device cuda --envs CartPole-v1,Bandit-v0 --sizes 1048576,4194304 \
    --columns "triton@cuda,torch@cuda,gym vector,numpy" --seconds 0.3 2>&1 | tee "$OUT/issue23_envs.log" | tail -20
  timeout 100 python3 bench/actor_critic.py --device cuda --hidden 256 --batch 4096 --seconds 0.3 \
    2>&1 | tee "$OUT/issue23_actor_critic.log" | tail -12
  timeout 80 python3 bench/knn.py --device cuda --M 100000,1000000 --d 64 --Q 256 --k 50 --no-small --seconds 0.5 \
    2>&1 | tee "$OUT/issue23_knn.log" | tail -12
  timeout 130 python3 bench/gpu_tune.py ac2 knn 2>&1 | tee "$OUT/issue23_gpu_tune.log" | grep -v "error" | tail -16
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ -n "$sanitizer" ]; then
    timeout 120 "$sanitizer" --tool memcheck --target-processes all --error-exitcode 1 \
      python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_knn.py tests/test_env_cuda.py tests/test_nn_cuda.py \
      tests/test_rollout_cuda.py tests/test_returns.py 2>&1 | tee "$OUT/issue23_memcheck.log" | tail -12
    echo "memcheck exit ${PIPESTATUS[0]} (124: timed out)"
  else
    echo "compute-sanitizer: not found on this machine" | tee "$OUT/issue23_memcheck.log"
  fi
fi
if has issue22; then
  timeout 150 python3 bench/train.py --device cuda --envs 1024,16384,65536 --columns "metarl fused" --seconds 3 \
    2>&1 | tee "$OUT/issue22_train_loop.log" | tail -12
  timeout -s TERM 100 python3 -m metarl train rl2 --device cuda --num-envs 65536 --total-env-steps 2e8 --quiet \
    --run-dir "$OUT/rl2-bandits-65536" 2>&1 | tee "$OUT/issue22_rl2_bandits.log" | tail -4
  timeout -s TERM 100 python3 -m metarl train rl2 --device cuda --env TabularMDP-v0 --episodes-per-trial 10 \
    --num-envs 16384 --normalize-returns true --hidden-size 128 --total-env-steps 5e8 --quiet \
    --run-dir "$OUT/rl2-mdp-16384" 2>&1 | tee "$OUT/issue22_rl2_mdp.log" | tail -4
  timeout -s TERM 160 python3 bench/reproduce_rl2.py --rows mdp-10 --device cuda --out "$OUT" 2>&1 \
    | tee "$OUT/issue22_mdp10.log" | tail -8
fi
cp bench/results/*.json "$OUT/" 2>/dev/null || true
