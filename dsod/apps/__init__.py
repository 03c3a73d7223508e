"""The work of the tools: what each ``tools/*.py`` script does once it has parsed its
arguments, above the engine.

* :mod:`~dsod.apps.eval_tool`: ``tools/eval.py``: predict a test split or read results
  files, write them, score them and report.
* :mod:`~dsod.apps.summary`: ``tools/summary.py``: a model's sources, priors, parameters
  and GFLOPs.
* :mod:`~dsod.apps.learning_curves`: ``tools/plot_curves.py``: training loss and test mAP
  from the trainer's ``log.jsonl``.

The other tools reach the package through its own API: :mod:`dsod.cli` (what every tool
does around its work), :mod:`dsod.inference`, :mod:`dsod.demo`, :mod:`dsod.export`.
"""
