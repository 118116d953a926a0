"""Datasets, preprocessing and the tf.data pipelines that feed the trainer."""

# ImageNet's per-channel mean and std on the 0..255 scale, RGB: the normalisation of the
# ImageNet configs and of torchvision's pretrained weights (its transforms.Normalize,
# ×255), so converted weights see the inputs they were trained on.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# dataset.augment's and dataset.order's choices, here (no TensorFlow) for the config checks.
AUGMENTATIONS = ('none', 'cifar', 'imagenet')
ORDERS = ('global', 'per_process')
