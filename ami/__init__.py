"""ami: world-model agents that learn a JEPA world model and plan by minimising an energy."""

__version__ = "0.1.0"
