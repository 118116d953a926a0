"""The same workload in PyTorch/torchvision, for the benchmark's ratio (optional extra).

torchvision's ResNet-18…152 are ResNet v1.5 like ours. It runs channels_last, in the
same dtype through autocast (float16 with a GradScaler), on a GPU with
cudnn.benchmark on (each convolution's fastest algorithm, as PyTorch's training
references set it); on the CPU with as many threads as JAX uses (every core).
`torch_compile=True` times `torch.compile(model)` (TorchInductor) instead of eager mode, its
compilation reported apart from the steps.
"""

import os
import statistics
import time
from typing import Any

TORCHVISION_MODELS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')


def available() -> str | None:
  """None if torch and torchvision import, else why not (one line)."""
  try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
  except ImportError as error:
    return f'--compare_torch needs torch and torchvision ({error}); pip install torch torchvision'
  return None


def measure(model_name: str, *, mode: str, batch_size: int, image_size: int, dtype: str,
            num_classes: int = 1000, warmup_steps: int = 2, timed_steps: int = 10,
            torch_compile: bool = False, label_smoothing: float = 0.0, momentum: float = 0.9,
            nesterov: bool = True, weight_decay: float = 1e-4) -> dict[str, Any]:
  """Median images/s of torchvision's `model_name` training (SGD) or evaluation steps.

  With `torch_compile`, the model is torch.compile'd (default mode); torch_compile_seconds
  is its first step, which compiles (later recompiles fall in the warmup steps). The
  optimizer is torch.optim.SGD with `momentum`, `nesterov` and `weight_decay` on every
  parameter; the loss cross-entropy with `label_smoothing`.
  """
  import torch
  import torchvision
  if model_name not in TORCHVISION_MODELS:
    raise ValueError(f'--compare_torch supports {", ".join(TORCHVISION_MODELS)}, not '
                     f'{model_name!r}')
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  if device == 'cpu':
    torch.set_num_threads(os.cpu_count() or 1)
  else:
    torch.backends.cudnn.benchmark = True
  model = getattr(torchvision.models, model_name)(num_classes=num_classes)
  model = model.to(device, memory_format=torch.channels_last)
  forward = torch.compile(model) if torch_compile else model
  images = torch.randn(batch_size, 3, image_size, image_size, device=device)
  images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, num_classes, (batch_size,), device=device)
  autocast_dtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16}.get(dtype)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum,
                              nesterov=nesterov, weight_decay=weight_decay)
  scaler = torch.amp.GradScaler(device, enabled=dtype == 'float16')
  model.train(mode == 'train')

  def step() -> None:
    with torch.autocast(device, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
      if mode == 'eval':
        with torch.no_grad():
          forward(images).argmax(-1)
        return
      loss = torch.nn.functional.cross_entropy(forward(images), labels,
                                               label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()

  def timed() -> float:
    start = time.perf_counter()
    step()
    if device == 'cuda':
      torch.cuda.synchronize()
    return time.perf_counter() - start

  first_step_seconds = timed()
  for _ in range(warmup_steps):
    timed()
  step_seconds = statistics.median(timed() for _ in range(timed_steps))
  start = time.perf_counter()  # back to back, one wait at the end: the host runs ahead
  for _ in range(timed_steps):
    step()
  if device == 'cuda':
    torch.cuda.synchronize()
  pipelined_seconds = (time.perf_counter() - start) / timed_steps
  return {'torch_version': torch.__version__, 'torchvision_version': torchvision.__version__,
          'torch_device': device, 'torch_compile': torch_compile,
          'torch_cudnn_benchmark': device == 'cuda' and torch.backends.cudnn.benchmark,
          'torch_first_step_seconds': first_step_seconds,
          'torch_compile_seconds': first_step_seconds if torch_compile else None,
          'torch_threads': torch.get_num_threads(), 'torch_step_seconds': step_seconds,
          'torch_images_per_sec': batch_size / step_seconds,
          'torch_pipelined_step_seconds': pipelined_seconds,
          'torch_pipelined_images_per_sec': batch_size / pipelined_seconds,
          'torch_device_peak_bytes': (torch.cuda.max_memory_allocated()
                                      if device == 'cuda' else None)}
