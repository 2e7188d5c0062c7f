"""tfx-ext: Keras 3 layers and tools for on-device and federated learning.

The repository keeps the design card's layout: `tfx_ext/` holds whole-model machinery, `layers/` the Keras layers
and `federated/` the simulator. `package_dir` installs the last two as `tfx_ext.layers` and `tfx_ext.federated`,
so nothing named `layers` or `federated` lands at the top level of site-packages.
"""

import pathlib

from setuptools import setup

HERE = pathlib.Path(__file__).parent


def _subpackages(root: str, package: str) -> list[str]:
    """Lists `package` and its subpackages found under directory `root`."""
    found = [package]
    for init in sorted((HERE / root).rglob("__init__.py")):
        rel = init.parent.relative_to(HERE / root)
        if rel.parts:
            found.append(".".join((package, *rel.parts)))
    return found


PACKAGES = (
    _subpackages("tfx_ext", "tfx_ext")
    + _subpackages("layers", "tfx_ext.layers")
    + _subpackages("federated", "tfx_ext.federated")
)
PACKAGE_DIR = {"tfx_ext": "tfx_ext", "tfx_ext.layers": "layers", "tfx_ext.federated": "federated"}
for _pkg in PACKAGES:  # setuptools needs every subpackage of a remapped package mapped explicitly.
    for _prefix, _dir in (("tfx_ext.layers", "layers"), ("tfx_ext.federated", "federated")):
        if _pkg.startswith(_prefix + "."):
            PACKAGE_DIR[_pkg] = _dir + "/" + _pkg[len(_prefix) + 1 :].replace(".", "/")

setup(
    name="tfx-ext",
    version="0.1.0",
    description="Keras 3 layers and tools for streaming, on-device (LiteRT int8) and federated learning.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    install_requires=[
        "tensorflow>=2.20",
        "keras>=3.10",
        "numpy",
        "absl-py",
        "scipy",
        "cryptography",
        "ai-edge-litert",
        "tqdm",
        "matplotlib",
        "scikit-learn",
        "dp-accounting",  # Google's privacy accountants (RDP, PLD) for DP-FedAvg.
        "espeakng-loader>=0.2",  # libespeak-ng (GPL-3) loaded at run time for pip-only speech synthesis.
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "nbclient", "nbformat", "ipykernel", "setuptools", "wheel"],
    },
    entry_points={"console_scripts": ["tfx-ext=tfx_ext.apps.cli:run"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: TensorFlow",
        "License :: OSI Approved :: Apache Software License",
    ],
)
