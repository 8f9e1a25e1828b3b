"""Rate-distortion benchmarks: running codecs over a dataset, BD-rates and plots.

Results use CompressAI's JSON format (``name``, ``description``, ``results`` with lists
of means over the dataset per quality level), so they load into the field's own tools.
"""
