"""rapgen: fine-tune OpenAI's GPT-2 on rap lyrics and write new songs from an `<<Artist` prompt.

Importing the package does nothing but define names: TensorFlow is imported the first time
a function that needs it is used, and no global state (eager mode, logging) is touched.

>>> import rapgen
>>> enc = rapgen.load_encoder("models/124M")                 # doctest: +SKIP
>>> rapgen.sample(model="models/124M", artist="Yung Lean")   # doctest: +SKIP
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use). No module is named like a
# function it exports: importing a submodule binds its name on the package, and `rapgen.train`
# must stay the function, whatever was imported before.
_EXPORTS = {
    "RapgenError": "rapgen.errors",
    "HParams": "rapgen.model.hparams",
    "load_encoder": "rapgen.model.encoder",
    "Encoder": "rapgen.model.encoder",
    "load_model": "rapgen.model.loading",
    "save_model": "rapgen.model.folders",
    "init": "rapgen.model.folders",
    "GPT2": "rapgen.model.gpt2",
    "download": "rapgen.model.download",
    "encode": "rapgen.data.dataset",
    "dataset_info": "rapgen.data.dataset",
    "train": "rapgen.finetune.loop",
    "sample": "rapgen.write.songs",
    "generate": "rapgen.write.generation",
    "interactive": "rapgen.write.songs",
    "artist_names": "rapgen.write.songs",
    "score": "rapgen.judge.perplexity",
    "merge": "rapgen.model.lora_run",
    "collect": "rapgen.data.collect",
    "analyze": "rapgen.judge.analysis",
    "perform": "rapgen.stage.perform",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'rapgen' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
