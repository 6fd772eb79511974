"""The task-agnostic layer both front ends share; it imports no Detectron2 and nothing of either front end.

`unikd.core`: the pure-PyTorch loss functions and modules (AFF, FDP, Gaussian KL, logit and feature KD
losses) and the run utilities (statistics, run folders, safe files, seeds, splits).
`unikd.terms`: the term API; every distillation method is one registered term serving both tasks.
`unikd.data`: data readers that both front ends use (Fashion-MNIST).
The import contract (docs/DESIGN.md section 2, tests/test_import_contract.py): `unikd` imports neither `unikd_det` nor
`classification`, `classification` imports `unikd` only, and `unikd_det` imports `unikd` and Detectron2.
"""
