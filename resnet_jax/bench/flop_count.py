"""How the benchmarks count a step's work: analytically, from the model's MACs.

XLA's `cost_analysis()` counts no FLOPs inside cuDNN convolutions or cuBLAS matmuls on
GPUs (custom calls): for ResNet-50 at batch 256 it reported 1.05e11 where the model does
~6.3e12, and an MFU of 0.3 % for ~17 %. Imports nothing beyond the standard library, so
the GPU benchmark's parent process stays off the device.
"""

# XLA's FLOP count is shown where it reaches this fraction of the analytic count.
XLA_COUNT_SHOWN_FROM = 0.5


def training_flops(macs_per_image: float, batch_size: int) -> float:
  """Analytic FLOPs of one training step: 3 × 2 × MACs per image × batch (a MAC is two
  FLOPs; the backward pass costs twice the forward: input and weight gradients)."""
  return 3 * 2 * macs_per_image * batch_size


def inference_flops(macs_per_image: float, batch_size: int) -> float:
  """Analytic FLOPs of one forward pass: 2 × MACs per image × batch."""
  return 2 * macs_per_image * batch_size


def xla_count_shown(xla_flops: float | None, analytic_flops: float | None) -> bool:
  """Whether XLA's count is worth showing: it counts at least XLA_COUNT_SHOWN_FROM of the
  analytic FLOPs (on GPUs cuDNN/cuBLAS custom calls count zero)."""
  return bool(xla_flops and analytic_flops and
              xla_flops >= XLA_COUNT_SHOWN_FROM * analytic_flops)
