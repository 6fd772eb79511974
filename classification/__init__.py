"""CIFAR-100 / ImageNet knowledge-distillation benchmark package.

A model zoo (`classification.models`), distillers registered by name (`classification.distillers`: vanilla,
kd, dkd, unikd, slkd) whose loss formulas come from `unikd.core`, an in-memory and an ImageNet data
pipeline, a trainer with exact resume, and a `bench` subcommand. Needs torch (and torchvision for ImageNet)
but never Detectron2. Command line: `python -m classification {train,eval,bench} ...`.
"""
