"""numpy's percentile (default method "linear") of the values in a text file, the independent reference
for koff::offload::percentile_linear (tests/offload/test_statistics.cpp).

usage: numpy_percentile.py VALUES.txt OUT.txt Q1 [Q2 ...]   (q in percent, as np.percentile takes)
"""
import sys

import numpy as np

values = np.loadtxt(sys.argv[1], dtype=np.float64, ndmin=1)
qs = [float(q) for q in sys.argv[3:]]
with open(sys.argv[2], "w") as f:
    for p in np.percentile(values, qs):
        f.write(f"{float(p)!r}\n")
