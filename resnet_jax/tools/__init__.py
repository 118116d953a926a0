"""Commands and tools built on the training core: benchmarks, weight conversion,
prediction, reports, export, model summaries, parity and fault-injection checks."""
