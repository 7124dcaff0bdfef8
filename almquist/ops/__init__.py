"""Tools for operators: the GPU placement plan checker (`placement`) and the KubeRay manifest generator
(`kuberay`, `python -m almquist.ops.kuberay`)."""
