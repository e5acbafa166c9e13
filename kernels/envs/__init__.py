"""Env-step kernels, one module per family (``kernels/envs/<family>.py``).

Every family module has the same shape:

- ``STATE_DIM``, ``OBS_DIM``, ``PARAM_NAMES`` (task fields, in order);
- ``dynamics_reference`` / ``reset_reference`` / ``observe_reference``: the
  pure-PyTorch oracle of one transition, one reset and the observation;
- ``step_reference`` / ``reset_masked_reference_``: the oracle of a whole batched
  step (and partial reset) with gymnasium's autoreset (built once in :mod:`._autoreset`);
- ``_step_nb`` / ``_reset_nb``: Numba CPU kernels (``parallel=True``);
- ``_step_tl`` / ``_reset_tl``: Triton kernels;
- ``step(...)`` / ``reset(...)``: the public ops — allocate outputs, dispatch on the
  device, ``backend=`` forces one (built once in :mod:`._launch`); the env calls the
  launchers directly with buffers it allocated once.

State is structure-of-arrays ``[STATE_DIM, N]`` float32; the random numbers come
from :mod:`metarl.kernels.rng` so every backend draws the same ones.
"""
