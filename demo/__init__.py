"""`trapcam demo`: the whole chain on a fresh machine, with numbers to check it by.

Synthetic crops -> a small model trained on the CPU -> an int8 bundle with its quantization
check -> a synthetic night recorded to disk -> the device loop on it -> SQLite, daily CSV,
Camtrap DP, plots -> counts against ground truth. It sits above `train`, `convert` and `edge`
(it imports all three); nothing imports it.
"""
