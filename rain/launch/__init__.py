"""`fg-image launch`: machines from a stored image, a job on them, the results back, the machines released."""
