"""Env-step kernels, one module per family (``kernels/envs/<family>.py``).

Every family module has the same shape:

- ``STATE_DIM``, ``OBS_DIM``, ``PARAM_NAMES`` (task fields, in order);
- ``dynamics_reference`` / ``reset_reference`` / ``observe_reference``: the
  pure-PyTorch oracle of one transition, one reset and the observation;
- ``step_reference`` / ``reset_masked_reference_``: the oracle of a whole batched
  step (and partial reset) with gymnasium's autoreset (built once in :mod:`._autoreset`);
- ``_dynamics_nb`` / ``_reset_state_nb`` / ``_observe_nb``: one env's transition, reset and
  observation in Numba, which ``_step_nb`` / ``_reset_nb`` (``parallel=True`` kernels) run under
  the autoreset written once in :mod:`._autoreset` (``step_env_nb`` / ``reset_env_nb``);
- ``_step_tl`` / ``_reset_tl``: Triton kernels: the family's dynamics, then the autoreset device
  functions of :mod:`._autoreset` (``autoreset_tl`` / ``masked_reset_tl``), then its reset and
  observation;
- ``episode_length(params)`` (only where every episode lasts a fixed number of steps:
  Bandit, TabularMDP): steps per episode ``[N]``, for trial planning;
- ``step(...)`` / ``reset(...)``: the public ops — allocate outputs, dispatch on the
  device, ``backend=`` forces one (built once in :mod:`._launch`); the env calls the
  launchers directly with buffers it allocated once.

State is structure-of-arrays ``[STATE_DIM, N]`` float32; the random numbers come
from :mod:`metarl.kernels.rng` so every backend draws the same ones.
"""
