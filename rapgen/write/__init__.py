"""Writing songs: logit filters, the compiled generation loop, `sample`/`interactive`, best-of-N."""
