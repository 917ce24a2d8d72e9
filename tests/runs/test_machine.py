"""A run records what it was made with, so numbers that differ between machines can be explained."""

from embedder.runs.machine import machine_versions


def test_machine_versions__libraries_cpu_and_threads():
    v = machine_versions()
    assert {"torch", "numpy", "annoy", "cpu", "cpu_count", "torch_threads", "torch_math", "omp_num_threads"} <= set(v)
    assert all(isinstance(value, str) and value for value in v.values())
