"""Building a trial's model: torchvision's zoo, hf: architectures, python: factories, ONNX
files and the per-node export cache, and the run's shipped files.
"""
