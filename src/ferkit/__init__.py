"""ferkit: facial emotion recognition with a from-scratch ResNet-18 trained on FER2013."""

__version__ = "0.1.0"
