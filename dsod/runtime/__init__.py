"""How a network runs: precision, layout and every speed path, behind one seam.

:mod:`dsod.models` is the paper's network in plain PyTorch modules. Everything else about
running it lives here, and the rest of the package reaches it through
:func:`~dsod.runtime.network.prepare_network` and :meth:`~dsod.runtime.network.Network.run`
(training, evaluation, :class:`~dsod.inference.Detector`, the benchmark):

* :mod:`~dsod.runtime.network`: ``prepare_network`` / ``Network.run`` and ``RunSettings``
  (device, precision, layout, speed paths).
* :mod:`~dsod.runtime.precision`: ``train.amp`` (auto, fp32, bf16, fp16) chosen for the
  machine.
* :mod:`~dsod.runtime.host_memory`: how the C allocator serves large CPU tensors (every
  tool sets it up at start, :mod:`dsod.cli`).

Each speed path makes one block faster (or, for the centre-tap convolution, correct in
bf16 on the CPU) and must give the same numbers as the plain block:

* :mod:`~dsod.runtime.conv`: centre-tap convolution over 1x1 maps (training).
* :mod:`~dsod.runtime.relu`: in-place ReLU of 16-bit CPU tensors on their int16 bits.
* :mod:`~dsod.runtime.l2norm`: the heads' L2Norm with a hand-written backward (training).
* :mod:`~dsod.runtime.recompute`: memory-efficient dense layers and stem, recomputed in
  the backward pass (training, ``model.memory_efficient``).
* :mod:`~dsod.runtime.shared_block`: dense blocks writing into one shared output
  (inference).
* :mod:`~dsod.runtime.fold`: BNs folded into convolutions (inference).
* :mod:`~dsod.runtime.compiled`: ``torch.compile`` for inference and training
  (``train.compile``, ``--compile``).
* :mod:`~dsod.runtime.cuda_graph`: CUDA-graph replay (inference, ``cuda_graphs``).

The switch is ``train.speed_paths`` (default true): ``prepare_network`` passes it to
:func:`~dsod.runtime.speed_paths.for_training` and
:func:`~dsod.runtime.speed_paths.for_inference`; false runs the paper's modules as they
are (the ONNX export always does).
"""
