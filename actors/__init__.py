"""Actors of the running target: targets, sessions (I_T nexuses) and logical units."""
