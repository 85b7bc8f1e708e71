"""Working on an image's root tree from the host: shared by the generate and register stages."""
