"""Speed and memory measurements of the ``dsod`` package on the current machine.

A top-level folder of the repository, beside ``tools/``, and not installed with ``dsod``:
run it from the repository root. ``tools/benchmark.py`` is the command; the pieces live
here so tests and notebooks can run them one by one; ``ab/`` holds the side-by-side (A/B)
scripts quoted in ``docs/performance_log.md``:

* :mod:`benchmarks.common`: options, repetition counts, timing, machine description.
* :mod:`benchmarks.models`: inference latency and throughput, training images per
  second, FLOP counts, the machine's convolution ceiling.
* :mod:`benchmarks.memory`: peak training memory, one fresh subprocess per setting.
* :mod:`benchmarks.pipeline`: post-processing, the data pipeline, VOC evaluation.
* :mod:`benchmarks.suite`: runs the sections, prints a table per section, builds the
  JSON report.

``docs/PERFORMANCE.md`` explains every figure. Nothing is imported here, so that the memory
subprocesses (forked from a server that imports only ``benchmarks.memory`` and
``benchmarks.models``) start with as little as possible.
"""
