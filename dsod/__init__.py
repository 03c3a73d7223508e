"""DSOD (Shen et al., ICCV 2017): object detectors trained from scratch, in PyTorch."""

__version__ = "0.2.0"
