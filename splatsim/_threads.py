"""Thread-runtime settings, applied before any OpenMP runtime or numba is loaded.

Two OpenMP runtimes share the cores in a splatsim process: torch's bundled libgomp (intra-op ops such
as the projection) and the system libgomp behind numba's ``omp`` threading layer (the tile
rasterizer). By default an idle libgomp thread spins for about 300k iterations before sleeping. When
another process holds a core, those spinning threads take turns with the ones doing work and a
2-thread render slows several-fold. A shorter spin (``GOMP_SPINCOUNT=10000``) measured as fast as
the default on an idle 2-core machine and about 35% faster with the cores oversubscribed (median of
16 frames, 320×240×50k object scene; see the README's renderer section). A value the user set is kept.

libgomp reads the variable once, when it is loaded: torch's copy at ``import torch``, numba's at the
first parallel kernel call. Every splatsim package imports this module first, so the setting reaches
numba's runtime always, and torch's unless the user imported torch before splatsim.

Numba's threading layer is chosen here too: OpenMP first (thread-safe, and it avoids numba's warning
about the old TBB that other packages bring along). As an environment variable set before numba is
imported it also reaches spawned worker processes, which may start numba's thread pool (to set its
size) before the kernels module is loaded.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")
os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", "omp tbb workqueue")
