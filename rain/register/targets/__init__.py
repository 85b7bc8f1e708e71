"""Target providers, one module each; see base.py for the interface and registry."""
