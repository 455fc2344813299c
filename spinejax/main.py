"""Train a spine-age model.

    python -m spinejax.main --config=configs/loss_l1.py --workdir=DIR --config.data.records_dir=RECORDS_DIR
        [--config.data.eligibility_csv=ELIGIBILITY_DIR/eligibility.csv] [--config.key=value ...]

Paths are taken relative to where the command runs and kept absolute in DIR/config.json, so the evaluation
and the report find the same files from any directory.

Resumes from DIR when it holds a checkpoint (refused when the config or the records it selects changed since;
--retrain_if_inputs_changed trains such a DIR again from step 0 when only the records or eligibility did).

Multi-process (one process per host): on a TPU VM pod or a SLURM cluster add --coordinator=auto; elsewhere
--coordinator=HOST:PORT --num_processes=N --process_id=I on each host. The training loop is spinejax/train.py.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from spinejax.errors import one_line_errors


def define_flags():
    config_flags.DEFINE_config_file("config", None, "training config file (configs/*.py[:arg])", lock_config=True)
    flags.DEFINE_string("workdir", None, "folder of checkpoints, metrics and logs")
    flags.DEFINE_string("coordinator", "", "multi-process runs: HOST:PORT of process 0, or 'auto'")
    flags.DEFINE_integer("num_processes", 1, "multi-process runs: number of processes")
    flags.DEFINE_integer("process_id", 0, "multi-process runs: this process's index")
    flags.DEFINE_bool("retrain_if_inputs_changed", False,
                      "a workdir trained on other records than the config selects now (records rebuilt, eligibility "
                      "changed) is cleared and trained again from step 0 instead of refused")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax and grain log every step at INFO
        logging.set_verbosity(logging.WARNING)
    from spinejax import host_memory

    # Before jax is imported (after flag parsing: jax must see XLA_FLAGS first): set after the import, the CPU
    # preset's train step runs about 15% slower (README "Training", Speed).
    host_memory.keep_freed_memory()
    from spinejax import distributed, train

    config = flags.FLAGS.config
    for key in ("records_dir", "eligibility_csv"):
        if config.data[key]:
            config.data[key] = os.path.abspath(config.data[key])
    distributed.initialize(flags.FLAGS.coordinator, flags.FLAGS.num_processes, flags.FLAGS.process_id)
    train.train_and_evaluate(config, flags.FLAGS.workdir,
                             retrain_if_inputs_changed=flags.FLAGS.retrain_if_inputs_changed)


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
