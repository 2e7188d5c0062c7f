"""`tfx-ext demo`: the end-to-end pipeline on offline data, with a Markdown report of every stage."""

from absl import flags

from tfx_ext.apps.demo import DemoConfig, run_demo
from tfx_ext.apps.synthesis import ENGINES

_DEFAULTS = DemoConfig()

flags.DEFINE_string("output_dir", _DEFAULTS.output_dir, "Where the report, figures and models are written.")
flags.DEFINE_string("cache_dir", None, "Where the synthesized data set is cached (default: <output_dir>/../.cache).")
flags.DEFINE_enum("size", "default", ["default", "tiny"], "'tiny' runs in seconds with toy settings (for tests).")
flags.DEFINE_enum("engine", _DEFAULTS.engine, list(ENGINES), "Keyword synthesis engine.")
flags.DEFINE_string("model", _DEFAULTS.model, "Reference KWS model: ds_cnn, crnn, gru or tc_resnet.")
flags.DEFINE_integer("epochs", None, "Training epochs (default: per --size).")
flags.DEFINE_integer("federated_rounds", None, "Rounds of the federated stage; 0 skips it (default: per --size).")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of data synthesis, training and the federated run.")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise SystemExit(f"tfx-ext demo takes no positional arguments. Received: {argv[1:]}")
    overrides = {"engine": FLAGS.engine, "model": FLAGS.model, "seed": FLAGS.seed, "cache_dir": FLAGS.cache_dir}
    if FLAGS.model != _DEFAULTS.model:
        overrides["model_kwargs"] = {}
    for name in ("epochs", "federated_rounds"):
        if getattr(FLAGS, name) is not None:
            overrides[name] = getattr(FLAGS, name)
    if FLAGS.size == "tiny":
        config = DemoConfig.tiny(FLAGS.output_dir, **overrides)
    else:
        config = DemoConfig(output_dir=FLAGS.output_dir, **overrides)
    run_demo(config)
