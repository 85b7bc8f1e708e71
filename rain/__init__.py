"""Rain: build, store, vet and register OS images for HPC testbeds and clouds."""

__version__ = "0.1.0"
