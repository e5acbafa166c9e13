"""Every family on a CUDA GPU (Triton kernels, compiled): trajectories against the
torch reference on the CPU. Skipped without a GPU.

On the GPU ptxas may fuse a*b+c into one FMA and libdevice's sin/cos/log differ
from the CPU's by an ulp, so observations are compared to float32 tolerance and
discrete outcomes (flags, bandit rewards, tabular states) must agree exactly.
"""
import pytest
import torch

import metarl
from metarl.envs import ENV_CLASSES

pytestmark = pytest.mark.cuda
N = 4099  # more than one Triton block, not a multiple of it


def _actions(env, g):
    space = env.single_action_space
    if hasattr(space, "n"):
        return torch.randint(0, int(space.n), (env.num_envs,), generator=g)
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return low + (high - low) * torch.rand((env.num_envs, *space.shape), generator=g)


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("env_id", sorted(e for e, path in ENV_CLASSES.items()  # MuJoCo families: no Triton kernel
                                    if not path.startswith("metarl.envs.mujoco.")))
def test_triton_on_gpu_matches_reference(env_id, mode):
    gpu = metarl.make_vec(env_id, N, device="cuda", seed=0, autoreset_mode=mode)
    ref = metarl.make_vec(env_id, N, device="cpu", seed=0, autoreset_mode=mode, backend="torch")
    assert gpu.backend == "triton"
    tasks = ref.sample_tasks(N, generator=torch.Generator().manual_seed(0))
    o_gpu, _ = gpu.reset(seed=0, options={"tasks": tasks})
    o_ref, _ = ref.reset(seed=0, options={"tasks": tasks})
    torch.testing.assert_close(o_gpu.cpu(), o_ref, atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        a = _actions(ref, g)
        out_gpu = gpu.step(a.cuda())
        out_ref = ref.step(a)
        torch.testing.assert_close(out_gpu[0].cpu(), out_ref[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out_gpu[1].cpu(), out_ref[1], atol=1e-4, rtol=1e-4)
        assert torch.equal(out_gpu[2].cpu(), out_ref[2])
        assert torch.equal(out_gpu[3].cpu(), out_ref[3])
        # keep both on the same state so float32 differences do not compound
        # (set_state also restarts both episode clocks alike)
        if ref.kernels.STATE_DIM:
            state = ref.get_state()
            ref.set_state(state)
            gpu.set_state(state.cuda())
