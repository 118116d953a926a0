"""Converted torchvision weights against PyTorch: the largest logit difference per depth.

  python -m resnet_jax.bench.torch_parity [--models=resnet18,resnet50] [--batch_size=2]

For each model: a torchvision ResNet with non-trivial BatchNorm state (running
statistics gathered by a train-mode pass, as training leaves them; random scales and
shifts, the last BN of each residual branch scaled down as in trained networks) is saved
as `.pth` or `.safetensors`, converted with resnet_jax.tools.convert, and both frameworks
compute eval-mode float32 logits of the same random 224×224 images. Needs torch and
torchvision, and a process without TensorFlow: importing torchvision after TensorFlow
crashes (tests run this as a subprocess).
"""

import json
import os
import tempfile

import jax
import numpy as np

from resnet_jax import models
from resnet_jax.tools import convert

DEPTHS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')


def save_reference(model_name: str, path: str, *, seed: int = 0):
  """Writes a torchvision `model_name` state dict with non-trivial BN state to `path`.

  The format follows the suffix: `.safetensors`, else torch.save. Returns the torch
  model, in eval mode.
  """
  import torch  # noqa: PLC0415  (optional dependency)
  import torchvision  # noqa: PLC0415
  from torchvision.models import resnet  # noqa: PLC0415

  torch.manual_seed(seed)
  model = getattr(torchvision.models, model_name)()
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.normal_(0.0, 0.2)
      module.momentum = None  # running statistics = the plain average over the passes
  for module in model.modules():  # after the loop above, which visits a block's BNs last
    if isinstance(module, (resnet.BasicBlock, resnet.Bottleneck)):
      last = module.bn3 if isinstance(module, resnet.Bottleneck) else module.bn2
      last.weight.data.uniform_(0.1, 0.4)
  model.train()
  with torch.no_grad():
    model(torch.randn(4, 3, 160, 160))
  model.eval()
  if path.endswith('.safetensors'):
    from safetensors.torch import save_file  # noqa: PLC0415
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
  else:
    torch.save(model.state_dict(), path)
  return model


def logit_difference(model_name: str, directory: str, *, file_format: str = 'pth',
                     batch_size: int = 2, image_size: int = 224,
                     seed: int = 0) -> tuple[float, float]:
  """(max |ours − torch|, max |torch|) over the logits of random images."""
  import torch  # noqa: PLC0415

  path = os.path.join(directory, f'{model_name}.{file_format}')
  torch_model = save_reference(model_name, path, seed=seed)
  images = torch.randn(batch_size, 3, image_size, image_size,
                       generator=torch.Generator().manual_seed(seed + 1))
  with torch.no_grad():
    expected = torch_model(images).numpy()
  variables = convert.load_torch_checkpoint(path, model_name)
  model = models.create_model(model_name, num_classes=expected.shape[-1])
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, images.numpy().transpose(0, 2, 3, 1))
  return float(np.abs(np.asarray(logits) - expected).max()), float(np.abs(expected).max())


def main(argv: list[str]) -> None:
  del argv
  rows = []
  with tempfile.TemporaryDirectory() as directory:
    for index, name in enumerate(FLAGS.models):
      file_format = 'safetensors' if index % 2 else 'pth'
      difference, scale = logit_difference(name, directory, file_format=file_format,
                                           batch_size=FLAGS.batch_size)
      rows.append({'model': name, 'file': file_format, 'max_abs_difference': difference,
                   'max_abs_logit': scale})
      if FLAGS.format == 'text':
        print(f'{name:10s} {file_format:12s} max |diff| {difference:.2e}   '
              f'max |logit| {scale:.3f}', flush=True)
  if FLAGS.format == 'json':
    print(json.dumps(rows))


if __name__ == '__main__':
  from absl import app, flags
  flags.DEFINE_list('models', list(DEPTHS), 'Models to compare.')
  flags.DEFINE_integer('batch_size', 2, 'Random 224×224 images per model.')
  flags.DEFINE_enum('format', 'text', ['text', 'json'], 'Output format.')
  FLAGS = flags.FLAGS
  app.run(main)
