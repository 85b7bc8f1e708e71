"""Register: vet an image, adapt a copy for a target, pack it, publish it, record where it went."""
