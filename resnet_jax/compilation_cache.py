"""JAX's persistent compilation cache: a second start or a resume loads its programs.

Imports only JAX and the standard library: the GPU benchmark uses it on bare CUDA JAX
images. JAX writes entries from process 0 only, so on a multi-host run with a local
directory per host the other processes still compile on every start (and the first step
waits for them); a directory all hosts share (a network file system, gs://...) avoids it.
"""

import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

# Programs that compiled faster than this are not written: the steps, the evaluation and
# the init take seconds; below it are hundreds of one-op programs (eager jnp calls) that
# load barely faster than they compile and would fill the directory with small files.
MIN_COMPILE_SECONDS = 0.2

_logger = logging.getLogger(__name__)


def enable(directory: str) -> str | None:
  """Turns JAX's persistent compilation cache on in `directory` ('' = off).

  `~` and environment variables are expanded and a local directory is created. If it
  cannot be created, the cache stays off with a warning: it only saves time. JAX's own
  variables win: with JAX_ENABLE_COMPILATION_CACHE=false it stays off and nothing is
  created; a directory named by JAX_COMPILATION_CACHE_DIR replaces a non-empty `directory`
  (a cluster's shared one, or the test suite's one per session).

  Returns:
    The directory in use, or None when the cache is off.
  """
  path = None
  if directory:
    directory = os.environ.get('JAX_COMPILATION_CACHE_DIR') or directory
  if directory and jax.config.jax_enable_compilation_cache:
    path = os.path.expandvars(os.path.expanduser(directory))
    if '://' not in path:  # Remote (gs://...): JAX creates it.
      path = os.path.abspath(path)
      try:
        os.makedirs(path, exist_ok=True)
      except OSError as error:
        _logger.warning('Compilation cache off: cannot create %r: %s', path, error)
        path = None
  if path is not None:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)  # any size
  if jax.config.jax_compilation_cache_dir != path:
    jax.config.update('jax_compilation_cache_dir', path)
    # JAX opens its cache once, at the first compile after a directory is set: a second
    # call in one process (tests, tools) must make it open the new one, or none.
    jax_cache.reset_cache()
  return path
