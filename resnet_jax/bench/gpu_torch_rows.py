"""The torchvision rows of the GPU benchmark (bench/gpu_benchmark.py): the same model,
batch and optimizer settings as the JAX recipe row, eager and under torch.compile
(bench/torch_reference), in a child process of its own."""

from typing import Any

TORCH_MODES = ('eager', 'compile')


def torch_row(spec: dict[str, Any]) -> dict[str, Any]:
  """torchvision's training step figures for spec (eager, or torch.compile with
  spec['compile_backend'])."""
  from resnet_jax.bench import torch_reference
  problem = torch_reference.available()
  if problem:
    raise RuntimeError(problem)
  if spec['torch_compile'] and spec['compile_backend'] != 'inductor':
    import torch
    compile_fn = torch.compile
    torch.compile = lambda model, **kw: compile_fn(model, backend=spec['compile_backend'], **kw)
  result = torch_reference.measure(
      spec['model'], mode='train', batch_size=spec['batch_size'],
      image_size=spec['image_size'], dtype=spec['dtype'], num_classes=spec['num_classes'],
      warmup_steps=spec['warmup_steps'], timed_steps=spec['timed_steps'],
      torch_compile=spec['torch_compile'], label_smoothing=spec['label_smoothing'],
      momentum=spec['momentum'], nesterov=spec['nesterov'],
      weight_decay=spec['weight_decay'])
  return result | {'model': spec['model'], 'batch_size': spec['batch_size'],
                   'image_size': spec['image_size'], 'dtype': spec['dtype'],
                   'torch_compile_backend': spec['compile_backend'] if spec['torch_compile']
                   else None}

