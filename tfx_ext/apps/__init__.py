"""The application built on the tfx-ext library: nothing in the library imports it.

    kws                     keyword spotting: train / evaluate / convert / export reference models on a data root
    synthesis               offline keyword synthesis into the Speech Commands layout (espeak-ng or numpy)
    federated_experiments   ready-made digits / keyword federated runs (what `tfx-ext federated simulate` runs)
    demo                    the end-to-end demo: stages that each add a section to a report
    report, plots           Markdown/JSON reports and matplotlib figures
    cli                     `tfx-ext COMMAND`
"""
