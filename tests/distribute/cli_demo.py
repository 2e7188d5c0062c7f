"""A minimal training command wired like the CLI's (`python -m tests.distribute.cli_demo --strategy=...`)."""

from absl import app, flags

from tfx_ext.apps.cli import flags as cli_flags

cli_flags.define_strategy_flags()
flags.DEFINE_string("out", None, "directory for the trained model")


def main(argv):
    del argv
    if cli_flags.run_local_cluster_if_requested():
        print("local cluster finished")
        return
    strategy = cli_flags.strategy_from_flags()
    from tests.distribute import workers
    from tfx_ext.distribute import fit, worker_id

    x, y = workers.kws_data(32)
    with strategy.scope():
        model = workers.kws_model()
    fit(model, x, y, batch_size=16, epochs=1, strategy=strategy, verbose=2, save_path=f"{flags.FLAGS.out}/m.keras")
    print(f"worker {worker_id(strategy)} of {strategy.num_replicas_in_sync} replicas done")


if __name__ == "__main__":
    app.run(main)
