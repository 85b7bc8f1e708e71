"""The image repository: catalog in MongoDB, bytes in GridFS, and its HTTP face."""
