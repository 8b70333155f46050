"""The optional C part (sfu._fastpath, sources in csrc/); everything else is in pyproject.toml.
If it cannot be built (no C compiler), the package installs without it and forwards in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sfu._fastpath",
            sources=["csrc/module.c", "csrc/sequencer.c", "csrc/sink.c", "csrc/lane.c", "csrc/latency.c", "csrc/vp8.c"],
            depends=["csrc/fastpath.h"],
            extra_compile_args=["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
