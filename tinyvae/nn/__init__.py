"""The building blocks of every model, each forward pass beside its hand-derived backward pass: the flat
parameter buffer (:mod:`~tinyvae.nn.params`), the layers (:mod:`~tinyvae.nn.layers`), the encoder and
decoder stacks (:mod:`~tinyvae.nn.stacks`), the likelihoods p(x|z) (:mod:`~tinyvae.nn.likelihoods`), the
autoencoders' penalties (:mod:`~tinyvae.nn.penalties`) and the optimisers (:mod:`~tinyvae.nn.optim`)."""
