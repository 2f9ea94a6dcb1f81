"""seglab: train, evaluate, compare and deploy segmentation models for 2D images and 3D volumes."""

__version__ = "0.1.0"
