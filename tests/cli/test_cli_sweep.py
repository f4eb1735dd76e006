"""A sweep of user mistakes over every command: each is one line, exit 2, before any work.

Every row is a command line a user could type by mistake (a misspelled flag, a flag without its
value, a missing or extra argument, a zero, negative or wrongly typed value, a file where a folder
belongs and the reverse, a damaged hparams.json, encoder.json, CSV or lyrics file). Each must end
with exactly one stderr line `rapgen: error: …` naming the problem, exit status 2, no traceback,
nothing on stdout, and the working folder exactly as it was (nothing created, nothing changed).

The rows that the command line itself must catch (PARSE_ROWS) run in one fresh subprocess that
also proves TensorFlow was never imported: no work can have started. The value rows run
in-process through `rapgen.cli.commands.main` (TensorFlow is imported once for all of them). A few rows
run the installed `rapgen` entry point as a user does.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from rapgen.cli.commands import main

LYRICS = (
    "<<Lil Tofu - Soy Drip>>\n[Hook]\nsoy on my wrist and the tofu on ice\n<|endoftext|>\n"
    "<<MC Fjord - Kall Natt>>\n[Vers 1]\nkall natt i hamnen, färjan går sent\n<|endoftext|>\n"
)

# (id, argv, words the error line must hold). Paths are relative to the working folder built below.
PARSE_ROWS = [
    # unknown commands and sources
    ("cmd-smaple", ["smaple"], ["'smaple'", "did you mean sample", "download", "collect"]),
    ("cmd-trian", ["trian", "--dataset", "lyrics.txt"], ["'trian'", "train"]),
    ("cmd-scroe", ["scroe", "lyrics.txt"], ["'scroe'", "score"]),
    ("cmd-datasetinfo", ["datasetinfo", "lyrics.txt"], ["'datasetinfo'", "dataset-info"]),
    ("collect-pdf", ["collect", "pdf", "x"], ["'pdf'", "genius", "csv", "folder"]),
    ("collect-csvv", ["collect", "csvv", "dump.csv"], ["'csvv'", "did you mean csv"]),
    ("collect-none", ["collect"], ["genius", "csv", "folder"]),
    ("collect-flag-first", ["collect", "--out", "x.txt"], ["genius", "csv", "folder"]),
    # misspelled flags, on every command
    ("download-model_dir", ["download", "124M", "--model_dir", "x"], ["--model_dir", "--models_dir"]),
    ("download-retry", ["download", "124M", "--retry", "3"], ["--retry", "--retries"]),
    ("download-timout", ["download", "124M", "--timout", "5"], ["--timout", "--timeout"]),
    ("download-baseurl", ["download", "124M", "--baseurl", "http://127.0.0.1:9"], ["--baseurl", "--base_url"]),
    ("init-n_layers", ["init", "new", "--n_layers", "2"], ["--n_layers", "--n_layer"]),
    ("init-nembd", ["init", "new", "--nembd", "64"], ["--nembd", "--n_embd"]),
    ("init-vocab", ["init", "new", "--vocabdir", "model"], ["--vocabdir", "--vocab_dir"]),
    ("encode-modle", ["encode", "lyrics.txt", "out.npz", "--modle", "model"], ["--modle", "--model"]),
    ("encode-encodng", ["encode", "lyrics.txt", "out.npz", "--encodng", "latin-1"], ["--encodng", "--encoding"]),
    ("info-modle", ["dataset-info", "lyrics.txt", "--modle", "model"], ["--modle", "--model"]),
    ("info-quite", ["dataset-info", "lyrics.txt", "--quite"], ["--quite", "--quiet"]),
    ("train-step", ["train", "--dataset", "lyrics.txt", "--model", "model", "--step", "5"], ["--step", "--steps"]),
    ("train-batchsize", ["train", "--dataset", "lyrics.txt", "--batchsize", "2"], ["--batchsize", "--batch_size"]),
    (
        "train-learning-rat",
        ["train", "--dataset", "lyrics.txt", "--learning-rat", "1"],
        ["--learning-rat", "--learning_rate"],
    ),
    ("train-drive", ["train", "--dataset", "lyrics.txt", "--drivedir", "d"], ["--drivedir", "--drive_dir"]),
    (
        "train-mixed",
        ["train", "--dataset", "lyrics.txt", "--mixed_precison", "off"],
        ["--mixed_precison", "--mixed_precision"],
    ),
    ("plan-memory", ["plan", "--model", "124M", "--memory", "15"], ["--memory", "--memory_gb"]),
    ("plan-batch", ["plan", "--model", "124M", "--batchsize", "2"], ["--batchsize", "--batch_size"]),
    ("merge-noargs", ["merge"], ["needs RUN"]),
    ("merge-noout", ["merge", "model"], ["needs OUT"]),
    ("plan-lorarank", ["plan", "--model", "124M", "--lora-rnak", "8"], ["--lora-rnak", "--lora_rank"]),
    ("sample-lenght", ["sample", "--model", "model", "--lenght", "8"], ["--lenght", "--length"]),
    ("sample-topk", ["sample", "--model", "model", "--topk", "40"], ["--topk", "--top_k"]),
    ("sample-temp", ["sample", "--model", "model", "--temprature", "0.7"], ["--temprature", "--temperature"]),
    ("sample-n_samples", ["sample", "--model", "model", "--n_samples", "2"], ["--n_samples", "--nsamples"]),
    ("sample-windwo", ["sample", "--model", "model", "--windwo", "slide"], ["--windwo", "--window"]),
    ("sample-saveto", ["sample", "--model", "model", "--save-too", "x.txt"], ["--save-too", "--save_to"]),
    ("interactive-lenght", ["interactive", "--model", "model", "--lenght", "8"], ["--lenght", "--length"]),
    (
        "interactive-artist",
        ["interactive", "--model", "model", "--artist", "X"],
        ["--artist", "rapgen interactive --help"],
    ),
    (
        "score-batchsize",
        ["score", "lyrics.txt", "--model", "model", "--batchsize", "2"],
        ["--batchsize", "--batch_size"],
    ),
    ("score-modle", ["score", "lyrics.txt", "--modle", "model"], ["--modle", "--model"]),
    ("genius-artist", ["collect", "genius", "--artist", "X"], ["--artist", "--artists"]),
    ("genius-max-song", ["collect", "genius", "--artists", "X", "--max-song", "5"], ["--max-song", "--max_songs"]),
    ("csv-were", ["collect", "csv", "dump.csv", "--were", "tag=rap"], ["--were", "--where"]),
    ("csv-artist_column", ["collect", "csv", "dump.csv", "--artist_column", "a"], ["--artist_column", "--artist_col"]),
    ("folder-outfile", ["collect", "folder", "songs", "--out_file", "x.txt"], ["--out_file", "--out"]),
    ("folder-maxsongs", ["collect", "folder", "songs", "--maxsongs", "3"], ["--maxsongs", "--max_songs"]),
    ("analyze-jsn", ["analyze", "lyrics.txt", "--jsn"], ["--jsn", "--json"]),
    ("analyze-nofile", ["analyze", "--quiet"], ["needs FILE"]),
    ("perform-bmp", ["perform", "lyrics.txt", "--bmp", "90"], ["--bmp", "--bpm"]),
    ("perform-out-novalue", ["perform", "lyrics.txt", "--out"], ["--out needs a value"]),
    ("sample-short-ambiguous", ["sample", "--model", "model", "-t", "1"], ["-t", "--top_k", "--temperature"]),
    ("sample-short-unknown", ["sample", "--model", "model", "-x", "1"], ["-x"]),
    # a flag that needs a value and has none
    ("sample-artist-novalue", ["sample", "--artist", "--length", "8"], ["--artist needs a value"]),
    ("sample-length-novalue", ["sample", "--model", "model", "--length"], ["--length needs a value"]),
    ("train-dataset-novalue", ["train", "--dataset"], ["--dataset needs a value"]),
    ("score-model-novalue", ["score", "lyrics.txt", "--model"], ["--model needs a value"]),
    ("download-dir-novalue", ["download", "124M", "--models_dir"], ["--models_dir needs a value"]),
    ("plan-model-novalue", ["plan", "--model", "--memory_gb", "15"], ["--model needs a value"]),
    ("csv-where-novalue", ["collect", "csv", "dump.csv", "--where"], ["--where needs a value"]),
    ("init-n_layer-novalue", ["init", "new", "--n_layer"], ["--n_layer needs a value"]),
    ("info-encoding-novalue", ["dataset-info", "lyrics.txt", "--encoding"], ["--encoding needs a value"]),
    ("interactive-seed-novalue", ["interactive", "--model", "model", "--seed"], ["--seed needs a value"]),
    # missing required arguments
    ("score-nofile", ["score"], ["needs FILE"]),
    ("encode-noargs", ["encode"], ["needs IN_PATH"]),
    ("encode-noout", ["encode", "lyrics.txt"], ["needs OUT_PATH"]),
    ("init-nodir", ["init"], ["needs MODEL_DIR"]),
    ("info-nodataset", ["dataset-info"], ["needs DATASET"]),
    ("csv-nofile", ["collect", "csv"], ["needs FILE"]),
    ("folder-nofolder", ["collect", "folder", "--quiet"], ["needs FOLDER"]),
    # extra arguments, repeated flags, True/False flags given something else
    (
        "score-extra",
        [
            "score",
            "lyrics.txt",
            "--model",
            "model",
            "--models_dir",
            "m",
            "--encoding",
            "utf-8",
            "--batch_size",
            "2",
            "--checkpoint",
            "c",
            "more.txt",
        ],
        ["'more.txt'"],
    ),
    ("info-extra", ["dataset-info", "lyrics.txt", "model", "models", "utf-8", "True", "extra"], ["'extra'"]),
    ("sample-twice", ["sample", "--model", "model", "--length", "8", "--length", "9"], ["--length is given twice"]),
    ("score-twice", ["score", "lyrics.txt", "--file", "lyrics.txt"], ["--file is given twice"]),
    ("sample-quiet-maybe", ["sample", "--model", "model", "--quiet=maybe"], ["--quiet", "True or False", "'maybe'"]),
    (
        "train-overwrite-sure",
        ["train", "--dataset", "lyrics.txt", "--overwrite=sure"],
        ["--overwrite", "True or False"],
    ),
    ("csv-tokens-x", ["collect", "csv", "dump.csv", "--tokens=x"], ["--tokens", "True or False"]),
]

VALUE_ROWS = [
    # download
    ("download-999M", ["download", "999M"], ["'999M'", "124M"]),
    ("download-retries-neg", ["download", "124M", "--retries", "-1"], ["retries", "-1"]),
    ("download-retries-float", ["download", "124M", "--retries", "1.5"], ["retries", "1.5"]),
    ("download-timeout-0", ["download", "124M", "--timeout", "0"], ["timeout", "0"]),
    ("download-timeout-abc", ["download", "124M", "--timeout", "abc"], ["timeout", "'abc'"]),
    ("download-ftp", ["download", "124M", "--base_url", "ftp://example.org"], ["ftp://example.org"]),
    (
        "download-dir-is-file",
        ["download", "124M", "--models_dir", "lyrics.txt", "--base_url", "http://127.0.0.1:9"],
        ["lyrics.txt", "--models_dir"],
    ),
    # init
    ("init-existing", ["init", "model"], ["model", "already holds a model"]),
    ("init-into-file", ["init", "lyrics.txt"], ["lyrics.txt", "not a folder"]),
    ("init-n_layer-0", ["init", "new", "--n_layer", "0"], ["n_layer", "0"]),
    ("init-n_layer-neg", ["init", "new", "--n_layer", "-1"], ["n_layer", "-1"]),
    ("init-n_layer-word", ["init", "new", "--n_layer", "two"], ["n_layer", "'two'"]),
    ("init-n_embd-odd", ["init", "new", "--n_embd", "65", "--n_head", "2"], ["n_embd", "n_head"]),
    ("init-n_ctx-0", ["init", "new", "--n_ctx", "0"], ["n_ctx", "0"]),
    ("init-n_vocab-small", ["init", "new", "--n_vocab", "100"], ["--n_vocab", "50257"]),
    ("init-seed-neg", ["init", "new", "--seed", "-1"], ["--seed", "-1"]),
    ("init-seed-word", ["init", "new", "--seed", "x"], ["--seed", "'x'"]),
    ("init-vocab-missing", ["init", "new", "--vocab_dir", "nowhere"], ["nowhere", "--vocab_dir"]),
    ("init-vocab-damaged", ["init", "new", "--vocab_dir", "badvocab"], ["badvocab", "encoder.json"]),
    ("init-vocab-file", ["init", "new", "--vocab_dir", "lyrics.txt"], ["lyrics.txt", "--vocab_dir"]),
    ("init-under-file", ["init", "lyrics.txt/new"], ["lyrics.txt"]),
    # encode
    ("encode-missing", ["encode", "missing.txt", "out.npz", "--model", "model"], ["missing.txt"]),
    ("encode-not-npz", ["encode", "lyrics.txt", "out.txt", "--model", "model"], ["out.txt", ".npz"]),
    ("encode-binary", ["encode", "binary.bin", "out.npz", "--model", "model"], ["binary.bin", "binary"]),
    ("encode-latin1", ["encode", "latin1.txt", "out.npz", "--model", "model"], ["latin1.txt", "--encoding"]),
    ("encode-empty", ["encode", "empty.txt", "out.npz", "--model", "model"], ["empty.txt", "no text"]),
    ("encode-empty-folder", ["encode", "adir", "out.npz", "--model", "model"], ["adir"]),
    ("encode-glob-nothing", ["encode", "*.nothing", "out.npz", "--model", "model"], ["*.nothing"]),
    ("encode-out-is-folder", ["encode", "lyrics.txt", "folder.npz", "--model", "model"], ["folder.npz", "folder"]),
    (
        "encode-out-under-file",
        ["encode", "lyrics.txt", "lyrics.txt/out.npz", "--model", "model"],
        ["lyrics.txt/out.npz"],
    ),
    ("encode-model-badvocab", ["encode", "lyrics.txt", "out.npz", "--model", "badvocab"], ["encoder.json"]),
    ("encode-model-999M", ["encode", "lyrics.txt", "out.npz", "--model", "999M"], ["'999M'"]),
    ("encode-encoding-nope", ["encode", "lyrics.txt", "out.npz", "--model", "model", "--encoding", "nope"], ["'nope'"]),
    # dataset-info
    ("info-missing", ["dataset-info", "missing.txt", "--model", "model"], ["missing.txt"]),
    ("info-binary", ["dataset-info", "binary.bin", "--model", "model"], ["binary.bin", "binary"]),
    ("info-latin1", ["dataset-info", "latin1.txt", "--model", "model"], ["latin1.txt", "--encoding"]),
    ("info-empty", ["dataset-info", "empty.txt", "--model", "model"], ["empty.txt"]),
    ("info-empty-folder", ["dataset-info", "adir", "--model", "model"], ["adir"]),
    ("info-model-badvocab", ["dataset-info", "lyrics.txt", "--model", "badvocab"], ["encoder.json"]),
    ("info-model-file", ["dataset-info", "lyrics.txt", "--model", "lyrics.txt"], ["lyrics.txt"]),
    ("info-npz-damaged", ["dataset-info", "damaged.npz", "--model", "model"], ["damaged.npz"]),
    ("info-encoding-nope", ["dataset-info", "lyrics.txt", "--model", "model", "--encoding", "nope"], ["'nope'"]),
    # train
    ("train-no-dataset", ["train", "--model", "model"], ["--dataset is required"]),
    ("train-dataset-missing", ["train", "--dataset", "missing.txt", "--model", "model"], ["missing.txt"]),
    ("train-dataset-binary", ["train", "--dataset", "binary.bin", "--model", "model"], ["binary.bin", "binary"]),
    ("train-dataset-empty", ["train", "--dataset", "empty.txt", "--model", "model"], ["empty.txt"]),
    ("train-dataset-folder", ["train", "--dataset", "adir", "--model", "model"], ["adir"]),
    ("train-steps-0", ["train", "--dataset", "lyrics.txt", "--model", "model", "--steps", "0"], ["--steps", "0"]),
    ("train-steps-neg", ["train", "--dataset", "lyrics.txt", "--model", "model", "--steps", "-2"], ["--steps", "-2"]),
    (
        "train-steps-word",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--steps", "ten"],
        ["--steps", "'ten'"],
    ),
    (
        "train-batch-0",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--batch_size", "0"],
        ["--batch_size", "0"],
    ),
    (
        "train-batch-float",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--batch_size", "1.5"],
        ["--batch_size", "1.5"],
    ),
    (
        "train-lr-0",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--learning_rate", "0"],
        ["--learning_rate", "0"],
    ),
    (
        "train-lr-word",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--learning_rate", "fast"],
        ["--learning_rate", "'fast'"],
    ),
    (
        "train-warmup-neg",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--warmup_steps", "-1"],
        ["--warmup_steps", "-1"],
    ),
    (
        "train-accumulate-0",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--accumulate_gradients", "0"],
        ["--accumulate_gradients"],
    ),
    (
        "train-optimizer",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--optimizer", "rmsprop"],
        ["--optimizer", "'rmsprop'", "adafactor"],
    ),
    (
        "train-recompute",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--recompute", "maybe"],
        ["--recompute", "'maybe'"],
    ),
    (
        "train-frozen",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--only_train_transformer_layers", "2"],
        ["--only_train_transformer_layers"],
    ),
    (
        "train-precision",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--mixed_precision", "float8"],
        ["--mixed_precision", "'float8'"],
    ),
    (
        "train-distribute",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--distribute", "gpu"],
        ["--distribute", "'gpu'"],
    ),
    (
        "train-memory-0",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--memory_gb", "0"],
        ["--memory_gb", "0"],
    ),
    (
        "train-val-1",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--val_fraction", "1"],
        ["--val_fraction", "1"],
    ),
    (
        "train-val-neg",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--val_fraction", "-0.1"],
        ["--val_fraction", "-0.1"],
    ),
    ("train-seed-neg", ["train", "--dataset", "lyrics.txt", "--model", "model", "--seed", "-1"], ["--seed", "-1"]),
    (
        "train-run-slash",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--run_name", "a/b"],
        ["--run_name", "'a/b'"],
    ),
    (
        "train-run-dotdot",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--run_name", ".."],
        ["--run_name", "'..'"],
    ),
    (
        "train-sample-num-0",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--sample_num", "0"],
        ["--sample_num", "0"],
    ),
    (
        "train-max-ckpt-0",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--max_checkpoints", "0"],
        ["--max_checkpoints", "0"],
    ),
    (
        "train-save-neg",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--save_every", "-1"],
        ["--save_every", "-1"],
    ),
    (
        "train-print-word",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--print_every", "often"],
        ["--print_every", "'often'"],
    ),
    (
        "train-xla-maybe",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--xla", "maybe"],
        ["--xla", "'maybe'"],
    ),
    (
        "train-seqlen-1",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--sequence_length", "1"],
        ["--sequence_length", "1"],
    ),
    (
        "train-seqlen-big",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--sequence_length", "100000"],
        ["--sequence_length", "100000"],
    ),
    (
        "train-restore-nowhere",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--restore_from", "nowhere"],
        ["--restore_from", "nowhere"],
    ),
    (
        "train-val-dataset-missing",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--val_dataset", "missing.txt"],
        ["missing.txt"],
    ),
    ("train-model-broken", ["train", "--dataset", "lyrics.txt", "--model", "broken"], ["broken", "hparams.json"]),
    ("train-model-badvocab", ["train", "--dataset", "lyrics.txt", "--model", "badvocab"], ["encoder.json"]),
    ("train-model-999M", ["train", "--dataset", "lyrics.txt", "--model", "999M"], ["'999M'"]),
    ("train-model-file", ["train", "--dataset", "lyrics.txt", "--model", "lyrics.txt"], ["lyrics.txt"]),
    ("train-model-missing-dir", ["train", "--dataset", "lyrics.txt", "--model", "no/such/model"], ["no/such/model"]),
    (
        "train-ckptdir-file",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--checkpoint_dir", "lyrics.txt"],
        ["--checkpoint_dir", "lyrics.txt"],
    ),
    (
        "train-drive-file",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--drive_dir", "lyrics.txt"],
        ["--drive_dir", "lyrics.txt"],
    ),
    ("train-dataset-npz-damaged", ["train", "--dataset", "damaged.npz", "--model", "model"], ["damaged.npz"]),
    (
        "train-models-dir-file",
        ["train", "--dataset", "lyrics.txt", "--model", "124M", "--models_dir", "lyrics.txt"],
        ["lyrics.txt"],
    ),
    ("train-encoding-nope", ["train", "--dataset", "lyrics.txt", "--model", "model", "--encoding", "nope"], ["'nope'"]),
    (
        "train-early-stop-neg",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--early_stop", "-1"],
        ["--early_stop", "-1"],
    ),
    (
        "train-early-stop-noval",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--early_stop", "2", "--val_every", "0"],
        ["--early_stop", "--val_every"],
    ),
    (
        "train-tensorboard-maybe",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--tensorboard", "maybe"],
        ["--tensorboard", "'maybe'"],
    ),
    # plan
    ("plan-999M", ["plan", "--model", "999M"], ["'999M'"]),
    ("plan-memory-0", ["plan", "--model", "124M", "--memory_gb", "0"], ["--memory_gb", "0"]),
    ("plan-memory-word", ["plan", "--model", "124M", "--memory_gb", "lots"], ["--memory_gb", "'lots'"]),
    ("plan-batch-0", ["plan", "--model", "124M", "--batch_size", "0"], ["--batch_size", "0"]),
    ("plan-seqlen-1", ["plan", "--model", "124M", "--sequence_length", "1"], ["--sequence_length", "1"]),
    ("plan-margin-1", ["plan", "--model", "124M", "--margin", "1"], ["--margin", "1"]),
    ("plan-optimizer", ["plan", "--model", "124M", "--optimizer", "lion"], ["--optimizer", "'lion'"]),
    ("plan-lora-neg", ["plan", "--model", "124M", "--lora_rank", "-4"], ["--lora_rank", "-4"]),
    (
        "plan-lora-target",
        ["plan", "--model", "124M", "--lora_rank", "8", "--lora_targets", "c_attn,wte"],
        ["--lora_targets", "'wte'"],
    ),
    (
        "train-lora-neg",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--lora_rank", "-1"],
        ["--lora_rank", "-1"],
    ),
    (
        "train-lora-alpha-0",
        ["train", "--dataset", "lyrics.txt", "--model", "model", "--lora_rank", "4", "--lora_alpha", "0"],
        ["--lora_alpha", "0"],
    ),
    ("merge-full-model", ["merge", "model", "merged"], ["model", "not a LoRA run"]),
    ("merge-missing-run", ["merge", "nowhere", "merged"], ["nowhere", "not a folder"]),
    ("merge-out-is-file", ["merge", "model", "lyrics.txt"], ["lyrics.txt", "not a folder"]),
    ("plan-recompute", ["plan", "--model", "124M", "--recompute", "maybe"], ["--recompute", "'maybe'"]),
    ("plan-precision", ["plan", "--model", "124M", "--mixed_precision", "float8"], ["--mixed_precision", "'float8'"]),
    ("plan-accumulate-0", ["plan", "--model", "124M", "--accumulate_gradients", "0"], ["--accumulate_gradients", "0"]),
    ("plan-model-broken", ["plan", "--model", "broken"], ["hparams.json"]),
    ("plan-model-file", ["plan", "--model", "lyrics.txt"], ["lyrics.txt"]),
    # sample
    ("sample-999M", ["sample", "--model", "999M"], ["'999M'"]),
    ("sample-missing-dir", ["sample", "--model", "no/such/model"], ["no/such/model"]),
    ("sample-model-file", ["sample", "--model", "lyrics.txt"], ["lyrics.txt"]),
    ("sample-model-broken", ["sample", "--model", "broken"], ["hparams.json"]),
    ("sample-model-badvocab", ["sample", "--model", "badvocab"], ["encoder.json"]),
    ("sample-model-empty-dir", ["sample", "--model", "adir"], ["adir"]),
    ("sample-length-0", ["sample", "--model", "model", "--length", "0"], ["--length", "0"]),
    ("sample-length-neg", ["sample", "--model", "model", "--length", "-5"], ["--length", "-5"]),
    ("sample-length-word", ["sample", "--model", "model", "--length", "long"], ["--length", "'long'"]),
    ("sample-length-big", ["sample", "--model", "model", "--length", "100000"], ["--length"]),
    ("sample-nsamples-0", ["sample", "--model", "model", "--nsamples", "0"], ["--nsamples", "0"]),
    ("sample-batch-0", ["sample", "--model", "model", "--batch_size", "0"], ["--batch_size", "0"]),
    ("sample-topk-neg", ["sample", "--model", "model", "--top_k", "-1"], ["--top_k", "-1"]),
    ("sample-topk-float", ["sample", "--model", "model", "--top_k", "2.5"], ["--top_k", "2.5"]),
    ("sample-topp-2", ["sample", "--model", "model", "--top_p", "2"], ["--top_p", "2"]),
    ("sample-temp-neg", ["sample", "--model", "model", "--temperature", "-1"], ["--temperature", "-1"]),
    ("sample-temp-word", ["sample", "--model", "model", "--temperature", "hot"], ["--temperature", "'hot'"]),
    ("sample-seed-word", ["sample", "--model", "model", "--seed", "lucky"], ["--seed", "'lucky'"]),
    ("sample-seed-neg", ["sample", "--model", "model", "--seed", "-3"], ["--seed", "-3"]),
    ("sample-precision", ["sample", "--model", "model", "--precision", "float8"], ["--precision", "'float8'"]),
    ("sample-prefix-empty", ["sample", "--model", "model", "--prefix", ""], ["prompt"]),
    ("sample-artist-empty", ["sample", "--model", "model", "--artist", " "], ["--artist"]),
    (
        "sample-save-to-folder",
        ["sample", "--model", "model", "--length", "4", "--save_to", "adir"],
        ["--save_to", "adir", "folder"],
    ),
    (
        "sample-save-to-under-file",
        ["sample", "--model", "model", "--length", "4", "--save_to", "lyrics.txt/x.txt"],
        ["--save_to", "lyrics.txt"],
    ),
    (
        "sample-checkpoint-nowhere",
        ["sample", "--model", "model", "--checkpoint", "nowhere"],
        ["--checkpoint", "nowhere"],
    ),
    (
        "sample-checkpoint-worst",
        ["sample", "--model", "model", "--checkpoint", "worst"],
        ["--checkpoint worst", "best, latest"],
    ),
    (
        "sample-checkpoint-best-none",
        ["sample", "--model", "model", "--checkpoint", "best"],
        ["--checkpoint best", "no model-best", "--checkpoint latest"],
    ),
    # several artists and songs past the context (issue 12, part 3 and 4)
    ("sample-artist-empty-name", ["sample", "--model", "model", "--artist", "Eminem,,Nas"], ["--artist", "empty name"]),
    ("sample-window-wide", ["sample", "--model", "model", "--window", "wide"], ["--window", "none, slide", "'wide'"]),
    (
        "sample-stride-0",
        ["sample", "--model", "model", "--length", "100", "--window", "slide", "--stride", "0"],
        ["--stride", "0"],
    ),
    ("sample-slide-no-length", ["sample", "--model", "model", "--window", "slide"], ["--window slide", "--length N"]),
    ("sample-stride-no-window", ["sample", "--model", "model", "--stride", "8"], ["--stride 8", "--window slide"]),
    (
        "sample-stride-over-half",
        ["sample", "--model", "model", "--length", "100", "--window", "slide", "--stride", "40"],
        ["--stride 40", "--stride 32 or less"],
    ),
    (
        "sample-length-big-window",
        ["sample", "--model", "model", "--length", "64"],
        ["--length 63 or less", "--window slide"],
    ),
    ("interactive-window", ["interactive", "--model", "model", "--window", "sliding"], ["--window", "'sliding'"]),
    (
        "interactive-stride-over-half",
        ["interactive", "--model", "model", "--length", "100", "--window", "slide", "--stride", "33"],
        ["--stride 33", "--stride 32 or less"],
    ),
    # interactive (refused before the model loads and before the first prompt)
    ("interactive-length-0", ["interactive", "--model", "model", "--length", "0"], ["--length", "0"]),
    ("interactive-length-word", ["interactive", "--model", "model", "--length", "x"], ["--length", "'x'"]),
    ("interactive-length-big", ["interactive", "--model", "model", "--length", "100000"], ["--length"]),
    ("interactive-nsamples-0", ["interactive", "--model", "model", "--nsamples", "0"], ["--nsamples", "0"]),
    ("interactive-batch-0", ["interactive", "--model", "model", "--batch_size", "0"], ["--batch_size", "0"]),
    ("interactive-topk-neg", ["interactive", "--model", "model", "--top_k", "-1"], ["--top_k", "-1"]),
    ("interactive-topp-2", ["interactive", "--model", "model", "--top_p", "2"], ["--top_p", "2"]),
    ("interactive-temp-neg", ["interactive", "--model", "model", "--temperature", "-1"], ["--temperature", "-1"]),
    ("interactive-precision", ["interactive", "--model", "model", "--precision", "int8"], ["--precision", "'int8'"]),
    ("interactive-999M", ["interactive", "--model", "999M"], ["'999M'"]),
    ("interactive-model-broken", ["interactive", "--model", "broken"], ["hparams.json"]),
    # score
    ("score-missing", ["score", "missing.txt", "--model", "model"], ["missing.txt"]),
    ("score-binary", ["score", "binary.bin", "--model", "model"], ["binary.bin", "binary"]),
    ("score-latin1", ["score", "latin1.txt", "--model", "model"], ["latin1.txt", "--encoding"]),
    ("score-folder", ["score", "adir", "--model", "model"], ["adir", "folder"]),
    ("score-empty", ["score", "empty.txt", "--model", "model"], ["empty.txt", "no text"]),
    ("score-batch-0", ["score", "lyrics.txt", "--model", "model", "--batch_size", "0"], ["--batch_size", "0"]),
    ("score-batch-word", ["score", "lyrics.txt", "--model", "model", "--batch_size", "x"], ["--batch_size", "'x'"]),
    ("score-999M", ["score", "lyrics.txt", "--model", "999M"], ["'999M'"]),
    ("score-model-broken", ["score", "lyrics.txt", "--model", "broken"], ["hparams.json"]),
    ("score-model-badvocab", ["score", "lyrics.txt", "--model", "badvocab"], ["encoder.json"]),
    ("score-encoding-nope", ["score", "lyrics.txt", "--model", "model", "--encoding", "nope"], ["'nope'"]),
    (
        "score-checkpoint-nowhere",
        ["score", "lyrics.txt", "--model", "model", "--checkpoint", "nowhere"],
        ["--checkpoint", "nowhere"],
    ),
    (
        "score-checkpoint-worst",
        ["score", "lyrics.txt", "--model", "model", "--checkpoint", "worst"],
        ["--checkpoint worst", "best, latest"],
    ),
    # collect genius (a token is set and the API is a closed port: nothing may be asked)
    ("genius-no-artists", ["collect", "genius"], ["artists"]),
    ("genius-empty-artists", ["collect", "genius", "--artists", " , "], ["artists"]),
    ("genius-max-0", ["collect", "genius", "--artists", "X", "--max_songs", "0"], ["--max_songs", "0"]),
    ("genius-workers-0", ["collect", "genius", "--artists", "X", "--workers", "0"], ["--workers", "0"]),
    ("genius-sort", ["collect", "genius", "--artists", "X", "--sort", "date"], ["--sort", "'date'"]),
    ("genius-rate-neg", ["collect", "genius", "--artists", "X", "--rate_limit", "-1"], ["--rate_limit", "-1"]),
    ("genius-timeout-0", ["collect", "genius", "--artists", "X", "--timeout", "0"], ["--timeout", "0"]),
    ("genius-retries-neg", ["collect", "genius", "--artists", "X", "--retries", "-1"], ["--retries", "-1"]),
    ("genius-min-length-neg", ["collect", "genius", "--artists", "X", "--min_length", "-1"], ["--min_length", "-1"]),
    ("genius-vocab-missing", ["collect", "genius", "--artists", "X", "--vocab_dir", "nowhere"], ["nowhere"]),
    ("genius-out-folder", ["collect", "genius", "--artists", "X", "--out", "adir"], ["--out", "adir", "folder"]),
    # collect csv
    ("csv-missing", ["collect", "csv", "missing.csv"], ["missing.csv"]),
    ("csv-folder", ["collect", "csv", "adir"], ["adir", "not a file"]),
    ("csv-binary", ["collect", "csv", "binary.bin"], ["binary.bin", "binary"]),
    ("csv-gz-damaged", ["collect", "csv", "damaged.csv.gz"], ["damaged.csv.gz"]),
    ("csv-delimiter", ["collect", "csv", "dump.csv", "--delimiter", "ab"], ["--delimiter", "'ab'"]),
    ("csv-encoding", ["collect", "csv", "dump.csv", "--encoding", "nope"], ["--encoding", "'nope'"]),
    ("csv-where-bad", ["collect", "csv", "dump.csv", "--where", "tagrap"], ["--where", "'tagrap'"]),
    ("csv-where-column", ["collect", "csv", "dump.csv", "--where", "genre=rap"], ["'genre'", "--where"]),
    ("csv-artist-col", ["collect", "csv", "dump.csv", "--artist_col", "singer"], ["'singer'", "--artist_col"]),
    ("csv-max-0", ["collect", "csv", "dump.csv", "--max_songs", "0"], ["--max_songs", "0"]),
    ("csv-min-neg", ["collect", "csv", "dump.csv", "--min_length", "-1"], ["--min_length", "-1"]),
    ("csv-out-is-input", ["collect", "csv", "dump.csv", "--out", "dump.csv"], ["--out", "input"]),
    ("csv-out-folder", ["collect", "csv", "dump.csv", "--out", "adir"], ["--out", "adir", "folder"]),
    ("csv-vocab-missing", ["collect", "csv", "dump.csv", "--vocab_dir", "nowhere"], ["nowhere"]),
    # collect folder
    ("folder-missing", ["collect", "folder", "nowhere"], ["nowhere", "not a folder"]),
    ("folder-file", ["collect", "folder", "lyrics.txt"], ["lyrics.txt", "not a folder"]),
    ("folder-empty", ["collect", "folder", "adir"], ["adir", "no .txt"]),
    ("folder-max-0", ["collect", "folder", "songs", "--max_songs", "0"], ["--max_songs", "0"]),
    ("folder-min-word", ["collect", "folder", "songs", "--min_length", "short"], ["--min_length", "'short'"]),
    ("folder-out-folder", ["collect", "folder", "songs", "--out", "adir"], ["--out", "adir", "folder"]),
    ("folder-vocab-damaged", ["collect", "folder", "songs", "--vocab_dir", "badvocab"], ["badvocab", "encoder.json"]),
]


def _bounded(argv):
    """A row that slipped through must still end soon: train one step, ask Genius on a closed port."""
    argv = list(argv)
    if argv[0] == "train" and "--steps" not in argv:
        argv += ["--steps", "1"]
    if argv[:2] == ["collect", "genius"]:
        for flag, value in (("--api_url", "http://127.0.0.1:9"), ("--retries", "0"), ("--timeout", "2")):
            if flag not in argv:
                argv += [flag, value]
    return argv


VALUE_ROWS = [(row_id, _bounded(argv), needles) for row_id, argv, needles in VALUE_ROWS]


def _tree(folder):
    """Every file and folder below `folder`: relative path -> digest of its bytes (None for folders)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder)] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha1(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model):
    """The working folder every row runs in: a tiny model, damaged copies of it, and files of every kind."""
    base = tmp_path_factory.mktemp("sweep")
    tiny_model(base / "model", n_layer=2, n_embd=32, n_head=2, n_ctx=64, seed=1)
    for name, damaged in (("broken", "hparams.json"), ("badvocab", "encoder.json")):
        shutil.copytree(base / "model", base / name)
        data = (base / name / damaged).read_bytes()
        (base / name / damaged).write_bytes(data[: len(data) // 2])  # a partial copy or sync
    (base / "lyrics.txt").write_text(LYRICS, encoding="utf-8")
    (base / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (base / "latin1.txt").write_bytes("<<MC Åke - Höst>>\nså kallt\n".encode("latin-1"))
    (base / "empty.txt").write_text("", encoding="utf-8")
    (base / "adir").mkdir()
    (base / "folder.npz").mkdir()
    (base / "songs" / "Lil Tofu").mkdir(parents=True)
    (base / "songs" / "Lil Tofu" / "Soy Drip.txt").write_text("soy on my wrist\n", encoding="utf-8")
    (base / "dump.csv").write_text("artist,title,lyrics\nLil Tofu,Soy Drip,soy on my wrist\n", encoding="utf-8")
    (base / "damaged.npz").write_bytes(b"PK\x03\x04" + bytes(60))  # a zip header, then nothing
    (base / "damaged.csv.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\x01\x02")
    return str(base)


def _env(vocab_dir):
    """What every row runs with: the vocabulary found, a Genius token, no model mirror, no network."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAPGEN_MODEL_URL",)}
    env.update(RAPGEN_VOCAB_DIR=vocab_dir, GENIUS_ACCESS_TOKEN="sweep-token-not-real")
    return env


def _check(row_id, code, out, err, needles):
    lines = err.strip().splitlines()
    assert code == 2, f"{row_id}: exit {code}\n{err}{out}"
    assert "Traceback" not in err + out, f"{row_id}:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("rapgen: error: "), f"{row_id}: stderr is not one error line:\n{err}"
    assert out == "", f"{row_id}: printed {out!r} before the error"
    for needle in needles:
        assert needle in lines[0], f"{row_id}: {needle!r} not in {lines[0]!r}"
    assert len(lines[0]) < 400, f"{row_id}: the error line is {len(lines[0])} characters"


# -- the command line's own rows: one fresh process, no TensorFlow ------------------------

_BATCH = """
import contextlib, io, json, os, sys
from rapgen.cli.commands import main
results = {}
for row_id, argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results[row_id] = [code, out.getvalue(), err.getvalue()]
heavy = sorted(m for m in ("tensorflow", "requests", "tqdm") if m in sys.modules)
print("RESULTS " + json.dumps({"rows": results, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def parse_results(work, vocab_dir):
    before = _tree(work)
    rows = [(row_id, argv) for row_id, argv, _ in PARSE_ROWS]
    done = subprocess.run(
        [sys.executable, "-c", _BATCH, json.dumps(rows)],
        cwd=work,
        env=_env(vocab_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS ") :]), before, _tree(work)


def test_command_line_mistakes_start_no_work(parse_results):
    results, before, after = parse_results
    assert results["heavy"] == [], f"imported {results['heavy']} for mistakes the command line alone can see"
    assert after == before


@pytest.mark.parametrize("row_id, argv, needles", PARSE_ROWS, ids=[r[0] for r in PARSE_ROWS])
def test_command_line_mistake(parse_results, row_id, argv, needles):
    code, out, err = parse_results[0]["rows"][row_id]
    _check(row_id, code, out, err, needles)


# -- value rows: in-process through rapgen.cli.commands.main -------------------------------------


@pytest.mark.parametrize("row_id, argv, needles", VALUE_ROWS, ids=[r[0] for r in VALUE_ROWS])
def test_value_mistake(work, vocab_dir, monkeypatch, row_id, argv, needles):
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in _env(vocab_dir).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(work)
    before = _tree(work)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    _check(row_id, code, out.getvalue(), err.getvalue(), needles)
    assert _tree(work) == before, f"{row_id} changed the working folder"


def test_init_without_a_vocabulary_points_to_one_that_works_offline(work, monkeypatch, tmp_path):
    monkeypatch.delenv("RAPGEN_VOCAB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no models/ here
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["init", "new"])
    _check("init-no-vocab", code, "", err.getvalue(), ["--vocab_dir", "RAPGEN_VOCAB_DIR"])
    assert "rapgen download" not in err.getvalue()  # offline, a download cannot be the fix
    assert os.listdir(tmp_path) == []


def test_the_sweep_covers_every_command():
    from rapgen.cli.commands import COMMANDS

    typed = {argv[0].replace("-", "_") for _, argv, _ in PARSE_ROWS + VALUE_ROWS}
    sources = {argv[1] for _, argv, _ in PARSE_ROWS + VALUE_ROWS if argv[0] == "collect" and len(argv) > 1}
    assert set(COMMANDS) <= typed
    assert {"genius", "csv", "folder"} <= sources
    assert len(PARSE_ROWS) + len(VALUE_ROWS) >= 150
    assert len({r[0] for r in PARSE_ROWS + VALUE_ROWS}) == len(PARSE_ROWS) + len(VALUE_ROWS)


# -- the installed entry point, as a user runs it ----------------------------------------


def _rapgen_script():
    script = os.path.join(os.path.dirname(sys.executable), "rapgen")
    assert os.path.exists(script), f"no rapgen entry point beside {sys.executable}: is the package installed?"
    return script


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["download", "124M", "--model_dir", "x"], ["--model_dir", "--models_dir"]),
        (["sample", "--lenght", "8"], ["--lenght", "--length"]),
        (["collect", "pdf", "x"], ["'pdf'", "genius"]),
        (["interactive", "--model", "model", "--length", "0"], ["--length", "0"]),
    ],
)
@pytest.mark.slow
def test_installed_entry_point(work, vocab_dir, argv, needles):
    before = _tree(work)
    done = subprocess.run(
        [_rapgen_script(), *argv],
        cwd=work,
        env=_env(vocab_dir),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    _check(" ".join(argv), done.returncode, done.stdout, done.stderr, needles)
    assert _tree(work) == before
