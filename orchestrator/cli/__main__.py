"""``python -m orchestrator.cli``: the same as ``infer-orch``."""

from orchestrator.cli import main

if __name__ == "__main__":
    main()
