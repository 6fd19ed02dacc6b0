"""RETAIN: robust finetuning of VLA policies by weight merging, with a versioned skill registry.

Importing this package is cheap: submodules import torch only where they need it.
"""
