"""Performing songs: a drum loop, and lyrics rapped on it as a WAV and a picture."""
