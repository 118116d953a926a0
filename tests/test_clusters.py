"""--distributed=auto finds clusters through JAX's own detection; SLURM GPU jobs that do not
run one process per allocated GPU stop with one line (resnet_jax/clusters.py)."""

import jax
import pytest
from jax._src.clusters import cloud_tpu_cluster

from resnet_jax import clusters, distributed
from resnet_jax.errors import ConfigError

_CLUSTER_VARIABLES = ('SLURM_', 'OMPI_', 'TPU_', 'MEGASCALE_', 'KUBERNETES_SERVICE_HOST')


@pytest.fixture
def bare(monkeypatch):
  """No cluster in the environment, not on a TPU VM."""
  import os  # noqa: PLC0415
  for name in list(os.environ):
    if name.startswith(_CLUSTER_VARIABLES):
      monkeypatch.delenv(name)
  monkeypatch.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', False)
  return monkeypatch


def _metadata(values):
  def get_metadata(key):
    if key not in values:
      return '', 404
    return values[key], 200
  return get_metadata


def test_nothing_is_detected_on_a_bare_machine(bare):
  assert clusters.detected_cluster() is None


def test_a_gcloud_created_tpu_vm_slice_is_found_through_the_metadata_server(bare):
  # The case the old check (TPU_WORKER_HOSTNAMES only) missed: no variable is set.
  bare.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', True)
  bare.setattr(cloud_tpu_cluster, 'get_metadata', _metadata({
      'agent-worker-number': '0', 'worker-network-endpoints': 'w0,w1,w2,w3', 'tpu-env': ''}))
  assert clusters.detected_cluster() == ('gcetpu', 4)


def test_a_single_host_tpu_vm_is_one_process(bare):
  bare.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', True)
  bare.setattr(cloud_tpu_cluster, 'get_metadata', _metadata({
      'agent-worker-number': '0', 'worker-network-endpoints': 'w0', 'tpu-env': ''}))
  assert clusters.detected_cluster() is None


def test_a_metadata_server_that_fails_is_no_cluster(bare):
  def broken(key):
    raise RuntimeError('metadata server unreachable')
  bare.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', True)
  bare.setattr(cloud_tpu_cluster, 'get_metadata', broken)
  assert clusters.detected_cluster() is None


def test_a_gke_tpu_pod_is_found(bare):
  bare.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', True)
  bare.setenv('TPU_WORKER_HOSTNAMES', 'a,b')
  bare.setenv('TPU_WORKER_ID', '1')
  bare.setattr(cloud_tpu_cluster, 'get_metadata', _metadata({'tpu-env': ''}))
  assert clusters.detected_cluster() == ('gketpu', 2)


_SLURM = {'SLURM_JOB_ID': '77', 'SLURM_STEP_NODELIST': 'node[1-2]', 'SLURM_NTASKS': '16',
          'SLURM_PROCID': '3', 'SLURM_LOCALID': '3'}


def test_slurm_is_found_inside_srun_only(bare):
  for name, value in _SLURM.items():
    bare.setenv(name, value)
  assert clusters.detected_cluster() is None  # the batch script's own shell
  bare.setenv('SLURM_STEP_NUM_TASKS', '16')
  assert clusters.detected_cluster() == ('slurm', 16)


def test_open_mpi_is_found(bare):
  bare.setenv('OMPI_MCA_orte_hnp_uri', '1531576320.0;tcp://10.96.0.1:34911')
  bare.setenv('OMPI_COMM_WORLD_SIZE', '4')
  assert clusters.detected_cluster() == ('ompi', 4)


def test_auto_starts_jax_distributed_where_a_cluster_is_detected(bare):
  calls = []
  bare.setattr(jax.distributed, 'initialize', lambda **kwargs: calls.append(kwargs))
  distributed.initialize('auto')
  assert calls == []
  bare.setenv('OMPI_MCA_orte_hnp_uri', '1.0;tcp://10.0.0.1:1')
  bare.setenv('OMPI_COMM_WORLD_SIZE', '2')
  distributed.initialize('auto')
  assert calls == [{'heartbeat_timeout_seconds': 30}]


# The SLURM GPU allocation check ---------------------------------------------------------

_STEP = {'SLURM_STEP_NUM_TASKS': '16', 'SLURM_LOCALID': '3', 'SLURM_PROCID': '11',
         'SLURMD_NODENAME': 'node2', 'SLURM_GPUS_ON_NODE': '8',
         'SLURM_STEP_TASKS_PER_NODE': '8(x2)', 'SLURM_NODEID': '1'}


def test_one_process_per_gpu_on_its_localid_passes():
  clusters.check_allocation(_STEP, 'gpu', 1, 16, [3])
  clusters.check_allocation({}, 'gpu', 8, 8, list(range(8)))  # not under srun: no check
  clusters.check_allocation(_STEP, 'cpu', 2, 2, [0, 1])  # not a GPU run


@pytest.mark.parametrize('environ, devices, message', [
    # A site default binding one GPU per task: task 3 sees only GPU 0.
    (_STEP, (1, 16, [0]), 'task 11 on node2: sees GPUs [0] where SLURM_LOCALID 3 expects '
     '[3]: run srun with --gpu-bind=none and no --gpus-per-task, as launch/slurm.sbatch does'),
    # --ntasks-per-node=1 on an 8-GPU node.
    ({**_STEP, 'SLURM_STEP_TASKS_PER_NODE': '1(x2)', 'SLURM_LOCALID': '0',
      'SLURM_STEP_NUM_TASKS': '2'}, (1, 2, [0]),
     'task 11 on node2: 8 GPUs allocated on this node but 1 tasks: run one task per GPU '
     '(sbatch --ntasks-per-node=8 --gpus-per-node=8)'),
    ({**_STEP, 'SLURM_STEP_TASKS_PER_NODE': '8,8'}, (1, 12, [3]),
     'task 11 on node2: 12 GPUs in the run for 16 tasks: every task needs exactly one GPU'),
])
def test_a_mismatch_stops_with_one_line(environ, devices, message):
  with pytest.raises(ConfigError) as error:
    clusters.check_allocation(environ, 'gpu', *devices)
  assert str(error.value) == message


def test_a_task_bound_to_one_gpu_is_named_before_jax_starts():
  clusters.check_gpu_binding({**_STEP, 'CUDA_VISIBLE_DEVICES': '0,1,2,3,4,5,6,7'})
  clusters.check_gpu_binding({**_STEP, 'CUDA_VISIBLE_DEVICES': '3', 'JAX_PLATFORMS': 'cpu'})
  with pytest.raises(ConfigError) as error:
    clusters.check_gpu_binding({**_STEP, 'CUDA_VISIBLE_DEVICES': '3'})
  assert str(error.value) == (
      'task 11 on node2: CUDA_VISIBLE_DEVICES=3 shows 1 GPU(s), but JAX takes GPU '
      'SLURM_LOCALID 3 of them: run srun with --gpu-bind=none and no --gpus-per-task, as '
      'launch/slurm.sbatch does')


def test_the_slurm_checks_skip_processes_started_inside_an_srun_step(bare):
  # launch/local.sh in `srun --pty bash`: the step's variables, but local.sh's coordinator.
  for name, value in {**_STEP, 'CUDA_VISIBLE_DEVICES': '0', 'SLURM_STEP_NUM_TASKS': '1',
                      'SLURM_STEP_TASKS_PER_NODE': '1', 'SLURM_LOCALID': '0'}.items():
    bare.setenv(name, value)
  checked = []
  bare.setattr(jax.distributed, 'initialize', lambda *args, **kwargs: None)
  bare.setattr(clusters, 'check_allocation', lambda *args: checked.append('allocation'))
  bare.setattr(clusters, 'check_gpu_binding', lambda *args: checked.append('binding'))
  distributed.initialize('auto', '127.0.0.1:1234', 8, 3)
  assert checked == []
  distributed.initialize('yes')  # srun's own tasks
  assert checked == ['binding', 'allocation']
