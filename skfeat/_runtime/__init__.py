"""Running a backbone over many images: settings, the model registry and the engine.

- :mod:`~skfeat._runtime._settings`: device, precision, batch size and threads of one
  call, resolved once (:func:`resolve_settings`).
- :mod:`~skfeat._runtime._precision`: which precision is fast and faithful where.
- :mod:`~skfeat._runtime._registry`: each backbone loaded once per process, tuned once.
- :mod:`~skfeat._runtime._fuse`: BatchNorm folded into the convolution before it.
- :mod:`~skfeat._runtime._engine`: a run plan over many images, streamed in batches.

Nothing is imported here, so importing one part (the settings, for ``n_jobs``) does
not import the others.
"""
