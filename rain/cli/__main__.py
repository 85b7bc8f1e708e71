"""`python -m rain.cli`: the fg-image command (what Rain's watcher runs when it has no console script path)."""

from rain.cli import main

main()
