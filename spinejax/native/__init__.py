"""spinejax's compiled CPU kernels (oneDNN 3D convolutions as XLA FFI targets): library.py builds and loads them."""
