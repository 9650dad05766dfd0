"""Files in and out: the dataset readers (:mod:`~tinyvae.io.idx`, :mod:`~tinyvae.io.datasets`), checkpoints
and model files written atomically in safetensors (:mod:`~tinyvae.io.checkpoint`,
:mod:`~tinyvae.io.modelfile`), and the PNG pictures and plots (:mod:`~tinyvae.io.images`)."""
