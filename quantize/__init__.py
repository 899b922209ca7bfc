"""Stage 2: INT8 / FP16 variants of a package and the accuracy-drift checker.

The package format (manifest.json with a ``variants`` table) is ready for them; the variants
themselves are built by the quantize issue that follows the vertical slice.
"""
