"""Datasets, preprocessing and the tf.data pipelines that feed the trainer."""
