"""`python -m tfx_ext` runs the command line."""

from tfx_ext.apps.cli import run

if __name__ == "__main__":
    run()
