"""The packages setuptools builds: each folder maps to a groundbreak subpackage, and every folder
below it (a subpackage, or package data such as infer/demo_data) is found here, not listed."""

from setuptools import find_namespace_packages, setup

PACKAGE_DIRS = {
    "groundbreak.datasets": "datasets",
    "groundbreak.train": "train",
    "groundbreak.infer": "infer",
}

setup(
    package_dir=PACKAGE_DIRS,
    packages=[
        f"{package}.{sub}" if sub else package
        for package, folder in PACKAGE_DIRS.items()
        for sub in ["", *find_namespace_packages(folder, exclude=["__pycache__", "*.__pycache__"])]
    ],
)
