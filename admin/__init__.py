"""Admin plane: configuration model, command line, control endpoint and console."""
