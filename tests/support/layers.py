"""The layer checker behind tests/test_layers.py: rapgen's import rules, read from the source with `ast`.

Every `import` and `from … import` of a rapgen module counts, at the top of a module or inside a
function. The rules:

* layers: a module imports only from its own layer or a lower one (LAYERS, lowest first);
* no import cycle among modules, function-local imports included;
* a function-local import of a rapgen module is allowed only when that module pulls in a heavy
  library (HEAVY), itself or through the rapgen modules it imports at its top (transitively);
* no module imports another module's `_private` name (nor reads one off an imported module).

Importing `a.b.c` also runs the `__init__` of `a` and `a.b`: that counts toward heaviness only,
not toward layers or cycles (the packages' `__init__` files hold no code that imports upward).
Imports by name at run time (`importlib.import_module("rapgen.…")`) are not seen.
"""

import ast
import dataclasses
import pathlib

# Lowest first. A name is a root module, a subpackage (every module under it) or a face module.
LAYERS = (
    ("errors", "fileio", "http", "checks", "colab", "devices"),
    ("model",),
    ("data",),
    ("judge",),
    ("write",),
    ("finetune",),
    ("stage",),
    ("cli",),
    ("notebook", "__init__", "__main__"),
)

HEAVY = ("tensorflow", "librosa", "matplotlib", "requests", "bs4", "tiktoken", "scipy", "sklearn")


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted ("rapgen.model.gpt2")
    line: int
    target: str  # the rapgen module imported from (the longest module the dotted name reaches)
    names: tuple  # the names taken from it (`from target import a, b`), () for `import target`
    local: bool  # inside a function


def module_names(package_dir, package="rapgen"):
    """{dotted module name: path} of every .py file of a package folder (`__init__` -> the package)."""
    root = pathlib.Path(package_dir)
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _in_function(node, parents):
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def _reached(dotted, modules):
    """The longest known module that `dotted` (a module or a module's attribute) names, or None."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def _absolute(node, source, is_package):
    """The absolute module an ImportFrom reads from (relative imports resolved)."""
    if not node.level:
        return node.module
    base = source.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@dataclasses.dataclass
class Tree:
    """A package read from its source: its modules, every import of its own modules, and the
    libraries each module imports at its top."""

    package: str
    modules: dict  # name -> path
    imports: list  # [Import]
    top_libraries: dict  # name -> set of top-level package names imported at the module's top
    private_reads: list  # [(source, line, "module._name")] attributes read off imported modules


def read_tree(package_dir, package="rapgen"):
    modules = module_names(package_dir, package)
    imports, top_libraries, private_reads = [], {}, []
    for source, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        is_package = path.name == "__init__.py"
        libraries = set()
        aliases = {}  # local name bound to a rapgen module -> that module
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _reached(alias.name, modules)
                    if target is None:
                        if not _in_function(node, parents):
                            libraries.add(alias.name.split(".")[0])
                        continue
                    imports.append(Import(source, node.lineno, target, (), _in_function(node, parents)))
                    if alias.asname:
                        aliases[alias.asname] = target
            elif isinstance(node, ast.ImportFrom):
                absolute = _absolute(node, source, is_package)
                if absolute is None or _reached(absolute, modules) is None:
                    if not _in_function(node, parents) and absolute:
                        libraries.add(absolute.split(".")[0])
                    continue
                local = _in_function(node, parents)
                plain = []
                for alias in node.names:
                    submodule = f"{absolute}.{alias.name}"
                    if submodule in modules:  # `from rapgen.model import gpt2`: the module itself
                        imports.append(Import(source, node.lineno, submodule, (), local))
                        aliases[alias.asname or alias.name] = submodule
                    else:
                        plain.append(alias.name)
                if plain or not node.names:
                    imports.append(Import(source, node.lineno, _reached(absolute, modules), tuple(plain), local))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _is_private(node.attr)
                and aliases[node.value.id] != source
            ):
                private_reads.append((source, node.lineno, f"{aliases[node.value.id]}.{node.attr}"))
        top_libraries[source] = libraries
    return Tree(package, modules, imports, top_libraries, private_reads)


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer_of(module):
    """The index in LAYERS of a dotted module name, or None for a module no layer names."""
    rest = module.split(".")[1:] or ["__init__"]
    for index, names in enumerate(LAYERS):
        if rest[0] in names:
            return index
    return None


def layer_violations(tree):
    out = []
    for module in tree.modules:
        if layer_of(module) is None:
            out.append(f"{module}: in no layer (add it to LAYERS in tests/support/layers.py)")
    for imp in tree.imports:
        mine, theirs = layer_of(imp.source), layer_of(imp.target)
        if mine is not None and theirs is not None and theirs > mine:
            where = "function-local " if imp.local else ""
            out.append(f"{imp.source}:{imp.line}: {where}import of {imp.target} (layer {theirs}) from layer {mine}")
    return out


def cycles(tree):
    """Every import cycle (a strongly connected set of two or more modules, or a module importing
    itself), as sorted module lists; function-local imports count."""
    graph = {m: set() for m in tree.modules}
    for imp in tree.imports:
        graph[imp.source].add(imp.target)
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_violations(tree):
    out = []
    for component in cycles(tree):
        members = set(component)
        edges = sorted(
            f"{i.source}:{i.line} -> {i.target}" for i in tree.imports if i.source in members and i.target in members
        )
        out.append("import cycle among " + ", ".join(component) + " (" + "; ".join(edges) + ")")
    return out


def heavy_modules(tree):
    """{module: the heavy library it pulls in at import time}, for every module that pulls one in:
    itself at its top, through a rapgen module it imports at its top, or through a parent
    package's `__init__`."""
    top = {m: set() for m in tree.modules}
    for imp in tree.imports:
        if not imp.local:
            top[imp.source].add(imp.target)
    for module in tree.modules:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = module.split(".")
        top[module].update(
            ".".join(parts[:end]) for end in range(1, len(parts)) if ".".join(parts[:end]) in tree.modules
        )
        top[module].discard(module)
    heavy = {}
    for module in sorted(tree.modules):
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            libraries = sorted(tree.top_libraries[current] & set(HEAVY))
            if libraries:
                heavy[module] = libraries[0] if current == module else f"{libraries[0]} (through {current})"
                break
            todo.extend(sorted(top[current]))
    return heavy


def local_import_violations(tree):
    heavy = heavy_modules(tree)
    return [
        f"{i.source}:{i.line}: function-local import of {i.target}, which imports no heavy library "
        f"({', '.join(HEAVY)}): import it at the top"
        for i in tree.imports
        if i.local and i.target not in heavy
    ]


def private_violations(tree):
    out = [
        f"{i.source}:{i.line}: imports {name} from {i.target}"
        for i in tree.imports
        if i.target != i.source
        for name in i.names
        if _is_private(name)
    ]
    out += [f"{source}:{line}: reads {name}" for source, line, name in tree.private_reads]
    return sorted(out)


def all_violations(package_dir, package="rapgen"):
    """{rule: [violation, …]} for the four rules."""
    tree = read_tree(package_dir, package)
    return {
        "layers": layer_violations(tree),
        "cycles": cycle_violations(tree),
        "local imports": local_import_violations(tree),
        "private names": private_violations(tree),
    }
