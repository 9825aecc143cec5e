"""Untrusted job code that writes into a trusted-only dir (the model cache): `... <target>`."""

import sys

with open(sys.argv[1], "w") as fh:
    fh.write("poisoned cache")
