"""CIFAR-100 / ImageNet knowledge-distillation benchmark package (model zoo, distillers, trainer, bench).

A placeholder until its issue lands; it will reuse the loss core in `unikd_det.core`.
"""
