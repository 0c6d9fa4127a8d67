from setuptools import setup

setup(
    name="npdlrm",
    version="0.1.0",
    description="DLRM training on NumPy and Numba with hand-written layers",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    # kernels/ ships inside the package as npdlrm.kernels (a top-level `kernels` is
    # another PyPI project)
    packages=["npdlrm", "npdlrm.kernels"],
    package_dir={"npdlrm": "npdlrm", "npdlrm.kernels": "kernels"},
    python_requires=">=3.9",
    install_requires=["numpy>=1.24", "numba>=0.58", "h5py>=3.8"],
    extras_require={"test": ["pytest>=7"]},
)
