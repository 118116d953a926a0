"""Run under jemalloc or tcmalloc where one is installed: ~1.4× faster CPU training.

XLA:CPU allocates a step's temporaries afresh each step (2.2 GB for ResNet-50 at batch
16) and glibc's malloc hands them back to the OS on free, so every step page-faults all
of them in again: ~1 s of system time per 2.4 s step on a 2-core machine. jemalloc and
tcmalloc, told not to return memory, keep the pages: the same step takes 1.75 s
(measured with `python -m resnet_jax.bench.benchmark`; docs/performance.md). An allocator
cannot be swapped inside a running process, so `reexec_with_fast_allocator` restarts
the command once, before anything is imported, with LD_PRELOAD set. Install one with
`apt install libjemalloc2` (or google-perftools); RESNET_JAX_ALLOCATOR=system opts out.
On GPU and TPU hosts the step's memory is the accelerator's, so the host allocator is left
alone there: the restart happens only when JAX will run on the CPU.
"""

import glob
import importlib.metadata
import os
import sys

_ENV_CHOICE = 'RESNET_JAX_ALLOCATOR'  # auto (default), system, or a library path
_ENV_DONE = 'RESNET_JAX_ALLOCATOR_SET'

# Library patterns, best first, and the settings that stop each returning memory.
_LIBRARIES = (
    ('libjemalloc.so.2', {'MALLOC_CONF': 'dirty_decay_ms:-1,muzzy_decay_ms:-1'}),
    ('libtcmalloc_minimal.so.4', {'TCMALLOC_RELEASE_RATE': '0'}),
    ('libtcmalloc.so.4', {'TCMALLOC_RELEASE_RATE': '0'}),
)
_LIBRARY_DIRS = ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64',
                 '/usr/lib', '/usr/local/lib')


def find_library() -> tuple[str, dict[str, str]] | None:
  """(path, environment) of the first fast allocator found, or None."""
  for name, settings in _LIBRARIES:
    for directory in _LIBRARY_DIRS:
      for path in sorted(glob.glob(os.path.join(directory, name))):
        return path, settings
  return None


# Device nodes of the accelerators JAX has plugins for, and those plugins' distributions.
_ACCELERATOR_NODES = ('/dev/nvidia0', '/dev/accel0', '/dev/vfio/0', '/dev/kfd')
_ACCELERATOR_PLUGINS = ('jax-cuda12-plugin', 'jax-cuda13-plugin', 'jax-rocm60-plugin',
                        'jax-rocm7-plugin', 'libtpu', 'libtpu-nightly')


def backend_will_be_cpu() -> bool:
  """Whether JAX will pick the CPU backend, decided without importing JAX (which would
  load the allocator-sensitive runtime before the restart)."""
  platforms = os.environ.get('JAX_PLATFORMS') or os.environ.get('JAX_PLATFORM_NAME') or ''
  if platforms:
    return platforms.split(',')[0].strip().lower() == 'cpu'
  if not any(os.path.exists(node) for node in _ACCELERATOR_NODES):
    return True
  for plugin in _ACCELERATOR_PLUGINS:
    try:
      importlib.metadata.distribution(plugin)
      return False
    except importlib.metadata.PackageNotFoundError:
      pass
  return True


def active() -> str:
  """Which allocator this process runs under: a library path, or 'system'."""
  preload = os.environ.get('LD_PRELOAD', '')
  for name, _ in _LIBRARIES:
    if name.split('.so')[0] in preload:
      return next(p for p in preload.split(':') if name.split('.so')[0] in p)
  return 'system'


def reexec_with_fast_allocator() -> None:
  """Restarts this command under jemalloc/tcmalloc if one is installed and not in use.

  Call it first thing in a __main__ module. Does nothing on non-Linux hosts, when
  RESNET_JAX_ALLOCATOR=system, when already restarted, when no library is found, or (with
  RESNET_JAX_ALLOCATOR=auto) when JAX will run on an accelerator.
  """
  choice = os.environ.get(_ENV_CHOICE, 'auto')
  if (not sys.platform.startswith('linux') or choice == 'system' or
      os.environ.get(_ENV_DONE) or active() != 'system'):
    return
  if choice == 'auto' and not backend_will_be_cpu():
    return
  if choice == 'auto':
    found = find_library()
  else:
    found = (choice, dict(_LIBRARIES[0][1] if 'jemalloc' in choice else _LIBRARIES[1][1]))
  if found is None:
    return
  path, settings = found
  env = dict(os.environ)
  env[_ENV_DONE] = '1'
  env['LD_PRELOAD'] = ':'.join(p for p in (path, env.get('LD_PRELOAD')) if p)
  for key, value in settings.items():
    env.setdefault(key, value)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(getattr(sys, 'orig_argv', [sys.executable, *sys.argv])), env)
