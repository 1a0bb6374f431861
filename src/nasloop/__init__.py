"""nasloop: LLM-driven neural architecture search for image classification on your own hardware."""

__version__ = "0.1.0"
