"""Commands users run on their models: prediction, reports, results over seeds, export,
weight conversion, model summaries, a run within a time budget; measurement is bench/."""
