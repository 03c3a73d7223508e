"""Speed and memory measurements of this package on the current machine.

``tools/benchmark.py`` is the command; the pieces live here so tests and notebooks can run
them one by one:

* :mod:`dsod.benchmarks.common`: options, repetition counts, timing, machine description.
* :mod:`dsod.benchmarks.models`: inference latency and throughput, training images per
  second, FLOP counts, the machine's convolution ceiling.
* :mod:`dsod.benchmarks.memory`: peak training memory, one fresh subprocess per setting.
* :mod:`dsod.benchmarks.pipeline`: post-processing, the data pipeline, VOC evaluation.
* :mod:`dsod.benchmarks.suite`: runs the sections, prints a table per section, builds the
  JSON report.

``docs/PERFORMANCE.md`` explains every figure. Nothing is imported here, so that the memory
subprocess (``python -m dsod.benchmarks.memory``) starts with as little as possible.
"""
