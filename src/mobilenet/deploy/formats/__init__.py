"""Format writers: one module per file format, each turning a prepared model into files on disk.

Every writer module exposes ``SUFFIXES`` (the file endings it writes), ``PRECISIONS`` and
``write(model, path, *, precision, calibration, **options) -> list[Path]``. Writers import neither
the runtimes nor verification; ``mobilenet.deploy.export`` stands above all three.
"""
