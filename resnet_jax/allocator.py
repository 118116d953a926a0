"""Run under jemalloc or tcmalloc where one is installed: ~1.4× faster CPU training.

XLA:CPU allocates a step's temporaries afresh each step (2.2 GB for ResNet-50 at batch
16) and glibc's malloc hands them back to the OS on free, so every step page-faults all
of them in again: ~1 s of system time per 2.4 s step on a 2-core machine. jemalloc and
tcmalloc, told not to return memory, keep the pages: the same step takes 1.75 s
(measured with `python -m resnet_jax.benchmark`; README "Performance"). An allocator
cannot be swapped inside a running process, so `reexec_with_fast_allocator` restarts
the command once, before anything is imported, with LD_PRELOAD set. Install one with
`apt install libjemalloc2` (or google-perftools); RESNET_JAX_ALLOCATOR=system opts out.
"""

import glob
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
  RESNET_JAX_ALLOCATOR=system, when already restarted, or when no library is found.
  """
  choice = os.environ.get(_ENV_CHOICE, 'auto')
  if (not sys.platform.startswith('linux') or choice == 'system' or
      os.environ.get(_ENV_DONE) or active() != 'system'):
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
