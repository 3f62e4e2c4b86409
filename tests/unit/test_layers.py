"""The package's layers, declared here and held against every import of the code (read with
``ast``, lazy imports inside functions included): a module imports only from its own layer
and the layers below, and the algorithms do not import each other. ``python
tests/unit/test_layers.py`` prints the import graph between the units (sub-packages and
top-level modules) with the layer of each."""
import ast
import collections
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PACKAGE = os.path.join(REPO, "mpi_gan")

# bottom to top; a unit is a sub-package or a top-level module of mpi_gan
LAYERS = [
    {"errors", "streams", "thread_pools", "argtypes"},  # standard library only
    {"seeding", "compression", "models"},               # numerics: numpy, torch, numba
    {"io", "gan"},                                      # files; the GAN math
    {"data", "metrics"},                                # datasets; scores
    {"comm"},                                           # MPI: transport, kinds, signals
    {"config"},                                         # run configurations
    {"train"},                                          # the training loop
    {"algorithms", "analysis", "preflight"},            # MD-GAN, FL-GAN, ...; offline; checks
    {"mdgan", "flgan", "asgd", "standalone", "analyze", "evaluate", "sample"},  # entry points
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}

# imports that break a rule today, each to go (issue 20); a fixed one must leave the list
KNOWN: set[tuple[str, str]] = set()


def module_name(path: str) -> str:
    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def imports() -> dict[str, set[str]]:
    """Module -> the mpi_gan modules (or names in them) it imports, anywhere in its code."""
    found = collections.defaultdict(set)
    for folder, _, files in os.walk(PACKAGE):
        for file in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, file)
            module = module_name(path)
            package = module if file == "__init__.py" else module.rsplit(".", 1)[0]
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        parts = package.split(".")
                        base = ".".join(parts[:len(parts) - node.level + 1])
                        target = f"{base}.{node.module}" if node.module else base
                    else:
                        target = node.module or ""
                    if target.split(".")[0] == "mpi_gan":  # a package's names: its modules
                        found[module].update(
                            [f"{target}.{a.name}" for a in node.names]
                            if not node.module or target == "mpi_gan" else [target])
                elif isinstance(node, ast.Import):
                    found[module].update(a.name for a in node.names
                                         if a.name.split(".")[0] == "mpi_gan")
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def algorithm(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "algorithms" else None


def broken_rules(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs that climb a layer, name an undeclared unit, or join two
    algorithms."""
    broken = set()
    for module, targets in graph.items():
        for target in targets:
            if unit(target) == "mpi_gan" or target == "mpi_gan":
                continue
            if unit(module) not in LAYER or unit(target) not in LAYER:
                broken.add((module, target))
            elif LAYER[unit(target)] > LAYER[unit(module)]:
                broken.add((module, target))
            elif algorithm(module) and algorithm(target) and algorithm(module) != algorithm(target):
                broken.add((module, target))
    return broken


def test_every_unit_has_a_layer():
    units = {unit(m) for m in imports()} | {
        name[:-3] if name.endswith(".py") else name for name in os.listdir(PACKAGE)
        if not name.startswith(("_", ".")) and (name.endswith(".py") or os.path.isdir(
            os.path.join(PACKAGE, name, "")) and os.path.exists(
            os.path.join(PACKAGE, name, "__init__.py")))}
    assert units - {"mpi_gan"} <= set(LAYER), sorted(units - set(LAYER) - {"mpi_gan"})


def test_no_import_climbs_a_layer_or_joins_two_algorithms():
    broken = broken_rules(imports())
    assert broken - KNOWN == set(), sorted(broken - KNOWN)
    assert KNOWN - broken == set(), f"fixed, take it off KNOWN: {sorted(KNOWN - broken)}"


def test_message_kinds_come_from_below_the_loop():
    """An algorithm's protocol (its message kinds) imports nothing of the training loop:
    the kinds every algorithm shares live with the transport (``comm/kinds.py``)."""
    graph = imports()
    protocols = [m for m in graph if m.startswith("mpi_gan.algorithms.") and
                 m.endswith(".protocol")]
    assert len(protocols) == 3
    for module in protocols:
        assert not [t for t in graph[module] if unit(t) == "train"], module


def test_the_rules_see_a_climbing_import_and_a_lazy_one():
    """The checker itself, on a made-up graph: an io module importing the training loop
    (even inside a function: ``imports`` reads the whole tree of each file) is caught."""
    graph = {"mpi_gan.io.runlog": {"mpi_gan.train.loop", "mpi_gan.errors"},
             "mpi_gan.io.atomic": {"mpi_gan.train"},  # from mpi_gan import train
             "mpi_gan.algorithms.mdgan.main": {"mpi_gan.algorithms.flgan.local",
                                               "mpi_gan.train.loop"}}
    assert broken_rules(graph) == {("mpi_gan.io.runlog", "mpi_gan.train.loop"),
                                   ("mpi_gan.io.atomic", "mpi_gan.train"),
                                   ("mpi_gan.algorithms.mdgan.main",
                                    "mpi_gan.algorithms.flgan.local")}
    lazy = imports()["mpi_gan.algorithms.mdgan.config"]  # comm.ulfm inside a function
    assert "mpi_gan.comm.ulfm" in lazy


if __name__ == "__main__":
    graph = imports()
    edges = collections.defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            if unit(target) != unit(module) and unit(target) != "mpi_gan":
                edges[unit(module)].add(unit(target))
    for i, units in reversed(list(enumerate(LAYERS))):
        for name in sorted(units):
            print(f"layer {i}  {name:13s} -> {', '.join(sorted(edges[name])) or '-'}")
    broken = broken_rules(graph)
    print(f"modules={len(graph)} imports={sum(map(len, graph.values()))} "
          f"broken_rules={len(broken)}")
    sys.exit(0)
