"""generate: recipes → images. Entry points: load_recipe, generate, run_batch."""
