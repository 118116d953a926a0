"""Which cluster this process runs in (JAX's own detection), and whether the devices it
sees match what SLURM allocated.

One process per GPU under SLURM: `launch/slurm.sbatch` runs `srun --gpu-bind=none`, so
every task sees all of its node's GPUs and JAX picks GPU SLURM_LOCALID (its SLURM
detection sets `local_device_ids`). A site default that binds each task to one GPU
(`--gpus-per-task`, `--gpu-bind`) leaves task 3 with one visible GPU, index 0, and
"invalid device ordinal" (jax-ml/jax#23452, #28194); `--ntasks-per-node=1` on an 8-GPU
node silently trains on one GPU of it. `check_gpu_binding` (from the environment, before
JAX's backend exists: the bad ordinal would fail its creation first) and `check_allocation`
turn both into one line. Both apply only to processes that SLURM launched as the run's
tasks: launch/local.sh inside an interactive `srun --pty bash` starts its own processes.
"""

import os
import re
from typing import Mapping

from absl import logging

from resnet_jax.errors import ConfigError


def detected_cluster() -> tuple[str, int] | None:
  """(JAX's name for the cluster, its process count) where JAX's own cluster detection
  finds this process to be one of several; None otherwise.

  JAX detects Cloud TPU VMs through the metadata server (gcloud-created slices and
  queued resources), GKE TPU pods, SLURM, Open MPI and Kubernetes; `--distributed=auto`
  starts jax.distributed wherever it finds more than one process. SLURM counts only
  inside `srun` (SLURM_STEP_NUM_TASKS): the batch script's own shell also carries
  SLURM_NTASKS, and a lone process started there must not wait for peers.
  """
  # JAX has no public API for its detection (0.10); its ClusterEnv registry is what
  # jax.distributed.initialize() itself consults.
  try:
    from jax._src import clusters as jax_clusters  # noqa: PLC0415
    registry = list(jax_clusters.ClusterEnv._cluster_types)
  except (ImportError, AttributeError) as error:  # a JAX that moved it: no detection
    logging.warning('JAX cluster detection unavailable (%s): pass --distributed=yes', error)
    return None
  for env in registry:
    if getattr(env, 'opt_in_only_method', False):
      continue
    try:
      if not env.is_env_present():
        continue
      name = getattr(env, 'name', '') or env.__name__
      if name == 'slurm' and 'SLURM_STEP_NUM_TASKS' not in os.environ:
        continue
      count = env.get_process_count()
    except Exception as error:  # noqa: BLE001  (a metadata server that does not answer)
      logging.warning('cluster detection %s failed: %s', env.__name__, error)
      continue
    if count > 1:
      return name, count
  return None


def _tasks_on_this_node(environ: Mapping[str, str]) -> int | None:
  """This node's task count from SLURM_STEP_TASKS_PER_NODE ('8(x2)', '8,4'), where
  SLURM_NODEID says which node this is."""
  spec, node = environ.get('SLURM_STEP_TASKS_PER_NODE', ''), environ.get('SLURM_NODEID', '0')
  counts = []
  for part in filter(None, spec.split(',')):
    match = re.fullmatch(r'(\d+)(?:\(x(\d+)\))?', part.strip())
    if not match:
      return None
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  index = int(node) if node.isdigit() else 0
  return counts[index] if index < len(counts) else None


def _where(environ: Mapping[str, str]) -> str:
  return f'task {environ.get("SLURM_PROCID", "?")} on {environ.get("SLURMD_NODENAME", "?")}'


def check_gpu_binding(environ: Mapping[str, str]) -> None:
  """ConfigError (one line) if srun bound this task to fewer GPUs than JAX's SLURM detection
  needs: it takes GPU SLURM_LOCALID among those CUDA_VISIBLE_DEVICES shows. Reads only the
  environment, so it runs before JAX creates its GPU backend."""
  visible, local_id = environ.get('CUDA_VISIBLE_DEVICES'), environ.get('SLURM_LOCALID', '')
  if visible is None or not local_id.isdigit() or environ.get('JAX_PLATFORMS') == 'cpu':
    return
  shown = [gpu for gpu in visible.split(',') if gpu.strip()]
  if int(local_id) >= len(shown):
    raise ConfigError(f'{_where(environ)}: CUDA_VISIBLE_DEVICES={visible} shows {len(shown)} '
                      f'GPU(s), but JAX takes GPU SLURM_LOCALID {local_id} of them: run srun '
                      'with --gpu-bind=none and no --gpus-per-task, as launch/slurm.sbatch does')


def check_allocation(environ: Mapping[str, str], platform: str, local_devices: int,
                     global_devices: int, local_hardware_ids: list[int]) -> None:
  """ConfigError (one line) unless a SLURM GPU job runs one process per allocated GPU,
  each on GPU SLURM_LOCALID. Does nothing outside `srun` or off GPUs."""
  if platform != 'gpu' or 'SLURM_STEP_NUM_TASKS' not in environ:
    return
  tasks = int(environ['SLURM_STEP_NUM_TASKS'])
  local_id = int(environ.get('SLURM_LOCALID', '0'))
  gpus_here = environ.get('SLURM_GPUS_ON_NODE', '')
  tasks_here = _tasks_on_this_node(environ)
  where = _where(environ)
  if gpus_here.isdigit() and tasks_here and int(gpus_here) != tasks_here:
    raise ConfigError(f'{where}: {gpus_here} GPUs allocated on this node but {tasks_here} '
                      f'tasks: run one task per GPU (sbatch --ntasks-per-node={gpus_here} '
                      f'--gpus-per-node={gpus_here})')
  if local_devices != 1 or local_hardware_ids != [local_id]:
    raise ConfigError(f'{where}: sees GPUs {local_hardware_ids} where SLURM_LOCALID '
                      f'{local_id} expects [{local_id}]: run srun with --gpu-bind=none and '
                      'no --gpus-per-task, as launch/slurm.sbatch does')
  if global_devices != tasks:
    raise ConfigError(f'{where}: {global_devices} GPUs in the run for {tasks} tasks: every '
                      'task needs exactly one GPU')
