"""Frames the board keeps for people to label (`--collect DIR`): which to keep, and the folder."""
