"""AdaComp (Hardy, Le Merrer, Sericola 2017), worker side.

Each layer tensor v sends its n_v = max(1, int(c |v|)) largest-magnitude
gradient entries (c = ``ratio``, 0.01 by default), as in the authors' released
code; by default the values travel as int8 with one scale per tensor (``values=int8``)
and the indices in the smallest gap code (exponential-Golomb on real gradients): the
best setting measured in the paper's experiment (docs/asgd.md). The other half of
AdaComp is the server's staleness-aware learning rate,
theta_i -= lr * g_i / max(1, tau_i), applied by ``mpi_gan.asgd`` using the
indices each push carries.
"""
from .topk import TopK


class AdaComp(TopK):
    name = "adacomp"
    PARAMS = {**TopK.PARAMS,
              "ratio": (0.01, TopK.PARAMS["ratio"][1],
                        "fraction c of each layer to send, in (0, 1]"),
              "values": ("int8", TopK.PARAMS["values"][1], TopK.PARAMS["values"][2])}

    def validate(self):
        if self.params["count"] is not None:
            raise ValueError("compressor 'adacomp' selects a fraction: give ratio, not count")
